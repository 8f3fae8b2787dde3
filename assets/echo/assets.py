"""Echo group: DICOM echocardiography clips, decoded, de-identified, keyframed, one partition per source.

Partitions are dynamic (``echo_sources``): a new site or data drop is a new key. The key ``synthetic``
generates seeded clips (:mod:`assets.echo.synth`) under ``sources/echo/synthetic`` of the
storage root unless ``MEDRWR_SOURCE_ECHO_SYNTHETIC`` points elsewhere; any other key reads the folder
the profile names (``MEDRWR_SOURCE_ECHO_<KEY>`` or ``<data dir>/echo/<key>``).

De-identification needs the site's salt in ``MEDRWR_DEID_SALT`` for every source but ``synthetic``
(which may use the published development salt, for generated clips only). Files without ultrasound
regions are quarantined unless ``MEDRWR_ECHO_ACCEPT_FULL_FRAME_<KEY>=1``. Outputs, quarantine rows and
metadata name files by pseudonymous keys; the key-to-path map is written only to the restricted folder
``MEDRWR_ECHO_KEYMAP_DIR`` when it is set (outside the storage root). The PHI check audits the table,
PNG chunks, stored file names, the quarantine rows and the metadata.
"""

import os

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    DynamicPartitionsDefinition,
    MetadataValue,
    Output,
    asset,
)

from assets.common.metadata import contract_check, data_version, quarantine_metadata, table_metadata
from assets.common.records import quarantine_frame
from assets.echo.keymap import write_key_map
from assets.echo.source import read_echo_source
from assets.echo.synth import SMOKE_MIX, generate, write_manifest_csv
from orchestration.profiles import get_profile
from orchestration.resources import SourcesResource, StorageResource
from orchestration.sources import SourceDir
from orchestration.storage import Storage
from quality.contracts import all_refs
from quality.echo_contracts import check_echo_studies

echo_sources = DynamicPartitionsDefinition(name="echo_sources")
SYNTHETIC = "synthetic"


def echo_source(key: str, store: Storage, profile: str | None) -> SourceDir:
    """The source folder of partition ``key``; for ``synthetic``, seeded clips written into storage."""
    override = os.environ.get(f"MEDRWR_SOURCE_ECHO_{key.upper()}")
    if key == SYNTHETIC and not override:
        n = int(os.environ.get("MEDRWR_ECHO_SYNTH_CLIPS", "8"))
        seed = int(os.environ.get("MEDRWR_ECHO_SYNTH_SEED", "0"))
        files, rows = generate(n_clips=n, n_patients=max(1, n // 2), seed=seed, options=SMOKE_MIX)
        store.delete("sources", "echo", SYNTHETIC)
        for name, data in files.items():
            store.write_bytes(data, "sources", "echo", SYNTHETIC, name)
        store.write_bytes(write_manifest_csv(rows), "sources", "echo", SYNTHETIC, "labels.csv")
        return SourceDir(store.uri("sources", "echo", SYNTHETIC), s3=store.s3)
    return SourceDir(override or get_profile(profile).echo_source_uri(key), s3=store.s3)


@asset(
    partitions_def=echo_sources,
    group_name="echo",
    code_version="echo_studies.v1",
    io_manager_key="table_io",
    kinds={"polars", "parquet", "dicom"},
    check_specs=[
        AssetCheckSpec("echo_studies_no_phi", asset="echo_studies", blocking=True,
                       description="no identifying value read from the inputs appears in the table, PNG chunks, "
                                   "image/clip ids; every keyframe is blank outside the ultrasound region"),
        AssetCheckSpec("echo_studies_contract", asset="echo_studies", blocking=True,
                       description="GX suite: unique clip ids, patient key, frames, frame rate, view, EF range, "
                                   "sector inside the image, keyframes resolvable"),
    ],
)
def echo_studies(context: AssetExecutionContext, storage: StorageResource, sources: SourcesResource):
    """De-identified echo clips of one source: metadata, labels, keyframe PNGs and a compact clip."""
    key = context.partition_key
    store = storage.get()
    src = echo_source(key, store, sources.profile)
    synthetic = key == SYNTHETIC and not os.environ.get(f"MEDRWR_SOURCE_ECHO_{key.upper()}")
    result = read_echo_source(src, store, key, salt=os.environ.get("MEDRWR_DEID_SALT"), synthetic=synthetic,
                              accept_full_frame=os.environ.get(f"MEDRWR_ECHO_ACCEPT_FULL_FRAME_{key.upper()}") == "1")
    df = result.frame
    quarantine = quarantine_frame(result.rejected, "echo_studies", key)
    quarantine_uri = store.write_quarantine(quarantine, "echo_studies", key)
    if result.rejected:
        context.log.warning(f"echo_studies[{key}]: {len(result.rejected)} files quarantined at {quarantine_uri}")
    if os.environ.get("MEDRWR_ECHO_KEYMAP_DIR"):
        write_key_map(result.key_map, os.environ["MEDRWR_ECHO_KEYMAP_DIR"], source=key,
                      salt_fingerprint=result.salt_fingerprint, published_root=store.root)
    metadata = {
        **table_metadata(df, ("view", "transfer_syntax", "photometric")),
        **quarantine_metadata(result.rejected, quarantine_uri),
        **result.metadata(),
    }
    phi = result.audit(quarantine, metadata)
    leaks = phi.leaks
    yield Output(df, data_version=data_version(df), metadata=metadata)
    yield AssetCheckResult(
        check_name="echo_studies_no_phi",
        passed=not leaks,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "identifiers_checked": phi.identifiers,
            "places_searched": phi.places_searched,
            "leaks": MetadataValue.json([f"{a} in {w}" for a, w in leaks[:50]]),
        },
    )
    yield contract_check("echo_studies_contract", check_echo_studies(df, store.existing_images(all_refs(df["keyframe_refs"]))))
