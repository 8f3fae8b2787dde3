"""Echo group: DICOM echocardiography clips, decoded, de-identified, keyframed, one partition per source.

Partitions are dynamic (``echo_sources``): a new site or data drop is a new key, an opaque site code
(``site-0007``, :func:`storage.keys.validate_site_key`; the runner refuses other keys before registering
them, and the asset refuses them before reading anything). The key ``synthetic``
generates seeded clips (:mod:`assets.echo.synth`) into the restricted location unless a
``MEDRWR_SOURCE_ECHO_SYNTHETIC`` override names a folder; any other key reads the folder the ``sources``
resource names (``MEDRWR_SOURCE_ECHO_<KEY>``, read from the environment at run time so that no run snapshot
holds it, or ``<data dir>/echo/<key>``).

Patient data fails closed:

- a non-synthetic source without a salt (``MEDRWR_DEID_SALT``: 32 random bytes as hex or base64,
  :func:`assets.echo.deid.check_salt`) is refused before any file is opened; the development salt serves
  generated clips only;
- files without ultrasound regions are quarantined unless the run knob ``accept_full_frame`` says this source
  has none (recorded in the metadata);
- only image regions' pixels are kept (region types, PS3.3 C.8.5.5), and OCR reads every keyframe and two
  clip frames before anything is stored: a clip showing one of its file's identifiers is quarantined
  (:mod:`quality.pixel_text`);
- keyframes and clips are staged in the restricted location (``deid`` resource), the PHI audit (table,
  quarantine, metadata, PNG chunks, stored file names, pixels outside the regions) and the contract run on
  what would be published, and only then is anything promoted to the published root
  (:mod:`assets.common.gates`);
- outputs, quarantine rows and metadata name files by pseudonymous keys; the key-to-path map is written only
  to ``<restricted root>/keymaps/echo_studies/<source>.keymap.csv`` (:mod:`assets.echo.keymap`).
"""

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    DynamicPartitionsDefinition,
    Failure,
    MetadataValue,
    asset,
)
from pydantic import Field

from assets.common.backfill import PER_PARTITION
from assets.common.gates import Publication, publish_or_refuse
from assets.common.metadata import (
    audit_trail,
    content_version,
    contract_check,
    quarantine_metadata,
    table_metadata,
)
from assets.common.records import quarantine_frame
from assets.common.resources import DeidResource, SourcesResource, StorageResource
from quality.contracts import ExpectationOutcome, all_refs, with_volume
from quality.echo_contracts import check_echo_studies, echo_source_problems
from storage.errors import SourceError
from storage.keys import InvalidSiteKey, validate_site_key
from storage.root import Storage
from storage.sources import SourceDir

from .deid import DEV_SALT, SaltError, file_key
from .keymap import write_key_map
from .source import read_echo_source
from .synth import SMOKE_MIX, generate, write_manifest_csv

echo_sources = DynamicPartitionsDefinition(name="echo_sources")
SYNTHETIC = "synthetic"


class EchoStudiesConfig(Config):
    """Run knobs of ``echo_studies`` (one run = one source partition)."""

    synthetic_clips: int = Field(default=8, description="clips generated for the synthetic source")
    synthetic_seed: int = Field(default=0, description="seed of the synthetic source")
    accept_full_frame: bool = Field(
        default=False,
        description="accept files without ultrasound regions as "
        "full-frame images (only for a source known to have no burned-in text)",
    )
    max_quarantine_share: float = Field(
        default=0.2, description="the contract fails above this share of files quarantined"
    )


def synthetic_source(restricted: Storage, n_clips: int, seed: int) -> SourceDir:
    """Seeded synthetic clips (with fake PHI) written to the restricted location, never the published root."""
    files, rows = generate(n_clips=n_clips, n_patients=max(1, n_clips // 2), seed=seed, options=SMOKE_MIX)
    restricted.delete("sources", "echo", SYNTHETIC)
    for name, data in files.items():
        restricted.write_bytes(data, "sources", "echo", SYNTHETIC, name)
    restricted.write_bytes(write_manifest_csv(rows), "sources", "echo", SYNTHETIC, "labels.csv")
    return SourceDir(restricted.uri("sources", "echo", SYNTHETIC), s3=restricted.s3)


@asset(
    backfill_policy=PER_PARTITION,
    partitions_def=echo_sources,
    group_name="echo",
    code_version="echo_studies.v2",
    io_manager_key="table_io",
    kinds={"polars", "parquet", "dicom"},
    check_specs=[
        AssetCheckSpec(
            "echo_studies_no_phi",
            asset="echo_studies",
            blocking=True,
            partitions_def=echo_sources,
            description="no identifying value read from the inputs appears in the table, the quarantine, "
            "the metadata, PNG chunks or stored file names; every generated column (keys, remapped UIDs, "
            "shifted dates, refs) has the form the pipeline gives it; every keyframe is blank outside "
            "the ultrasound region",
        ),
        AssetCheckSpec(
            "echo_studies_contract",
            asset="echo_studies",
            blocking=True,
            partitions_def=echo_sources,
            description="GX suite: rows kept, quarantined share bounded, unique clip ids, patient key, "
            "frames, frame rate, view, EF range, sector inside the image, keyframes resolvable",
        ),
    ],
)
def echo_studies(
    context: AssetExecutionContext,
    config: EchoStudiesConfig,
    storage: StorageResource,
    sources: SourcesResource,
    deid: DeidResource,
):
    """De-identified echo clips of one source: metadata, labels, keyframe PNGs and a compact clip."""
    try:
        key = validate_site_key(context.partition_key)
    except InvalidSiteKey as e:
        raise Failure(f"echo_studies: refusing this partition before reading anything: {e}") from e
    store = storage.get()
    restricted = deid.restricted(store)
    synthetic = key == SYNTHETIC and not sources.has_echo_override(key)
    if synthetic:
        src = synthetic_source(restricted, config.synthetic_clips, config.synthetic_seed)
        salt = deid.salt or DEV_SALT
    else:
        if not deid.salt:
            raise Failure(
                f"echo_studies[{key}]: refusing to process a non-synthetic source without a "
                "de-identification salt. Set MEDRWR_DEID_SALT (a secret) and run again."
            )
        src, salt = sources.echo_source(key), deid.salt
    with store.staging(
        f"{context.run.run_id}-echo_studies-{key}", staging_root=restricted.uri("staging")
    ) as stage:  # discarded in a finally if the step fails
        try:
            result = read_echo_source(
                src, stage, key, salt=salt, synthetic=synthetic, accept_full_frame=config.accept_full_frame
            )
        except SaltError as e:
            stage.discard()
            raise Failure(f"echo_studies[{key}]: {e}") from e
        except SourceError as e:  # a whole-source problem (a manifest): said without the folder's path
            stage.discard()
            problem = f"{e.problem}. {e.fix}".replace(src.root, "<source folder>")
            raise Failure(f"echo_studies[{key}]: the source cannot be read: {problem}") from None
        # every file the input manifest lists (the label manifest too, not only the clips read) is in the key
        # map, so an auditor with access to the restricted root can resolve and re-hash each of them
        keyed: dict[str, str] = {}

        def manifest_key(rel: str) -> str:
            keyed[file_key(salt, key, rel)] = rel
            return file_key(salt, key, rel)

        inputs = src.input_manifest(key=manifest_key)  # pseudonymous path keys
        write_key_map(
            {**keyed, **result.key_map},
            restricted.uri("keymaps"),
            source=key,
            salt_fingerprint=result.salt_fingerprint,
            published_root=store.root,
            storage_options=restricted.s3.s3fs_kwargs() if restricted.is_s3 else None,
        )
        df = result.frame
        quarantine = quarantine_frame(result.rejected, "echo_studies", key)
        metadata = {
            **table_metadata(df, ("view", "transfer_syntax", "photometric")),
            **quarantine_metadata(result.rejected),
            **result.metadata(),
            "synthetic_source": synthetic,
        }
        phi = result.audit(quarantine, metadata)
        phi_check = AssetCheckResult(
            check_name="echo_studies_no_phi",
            passed=phi.passed,
            severity=AssetCheckSeverity.ERROR,
            metadata={
                "identifiers_checked": phi.identifiers,
                "places_searched": phi.places_searched,
                "leaks": MetadataValue.json([f"{a} in {w}" for a, w in phi.leaks[:50]]),
            },
        )
        contract = with_volume(
            check_echo_studies(
                df,
                stage.existing_images(all_refs(df["keyframe_refs"])),
                **audit_trail(store, context, "echo_studies", key),
            ),
            df.height,
            len(result.rejected),
            config.max_quarantine_share,
        )
        problems = echo_source_problems(result.files_seen, result.candidates, df.height, len(result.rejected))
        contract = type(contract)(
            contract.suite,
            contract.rows,
            [
                *contract.outcomes,
                *[ExpectationOutcome("source_yields_clips", None, False, 1, [p]) for p in problems],
            ],
            contract.docs,
        )
        pub = Publication(
            "echo_studies",
            key,
            df,
            quarantine,
            metadata=metadata,
            data_version=content_version(df),
            stage=stage,
            quarantine_store=store if phi.passed else restricted,
            inputs=inputs,
        )
        yield from publish_or_refuse(
            context, store, pub, [phi_check, contract_check("echo_studies_contract", contract)]
        )
