"""Echo group: DICOM echocardiography clips, decoded, de-identified, keyframed, one partition per source.

Partitions are dynamic (``echo_sources``): a new site or data drop is a new key. The key ``synthetic``
generates seeded clips (:mod:`assets.echo.synth`) under ``sources/echo/synthetic`` of the
storage root unless ``MEDRWR_SOURCE_ECHO_SYNTHETIC`` points elsewhere; any other key reads the folder
the profile names (``MEDRWR_SOURCE_ECHO_<KEY>`` or ``<data dir>/echo/<key>``).

De-identification uses the salt in ``MEDRWR_DEID_SALT`` (a published development salt otherwise: set it
in production). The quarantine table names source files by their original paths, which in some layouts
(MIMIC-IV-ECHO ``files/pXX/pXXXXXXXX/...``) carry source identifiers: it belongs with the raw data, under
the same access rules, and is not covered by the PHI check, which audits the published outputs.
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
from assets.echo.dicom import output_places, read_echo_source
from assets.echo.synth import SMOKE_MIX, generate, write_manifest_csv
from orchestration.profiles import get_profile
from orchestration.resources import SourcesResource, StorageResource
from orchestration.sources import SourceDir
from orchestration.storage import Storage
from quality.contracts import all_refs
from quality.echo_contracts import check_echo_studies
from quality.phi import audit

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
    result = read_echo_source(src, store, key)
    df = result.frame
    quarantine_uri = store.write_quarantine(quarantine_frame(result.rejected, "echo_studies", key), "echo_studies", key)
    if result.rejected:
        context.log.warning(f"echo_studies[{key}]: {len(result.rejected)} files quarantined at {quarantine_uri}")
    phi = audit(result.identifiers, output_places(df, store))
    leaks = phi.leaks + [("pixels outside the ultrasound region", v) for v in result.blank_violations]
    yield Output(
        df,
        data_version=data_version(df),
        metadata={
            **table_metadata(df, ("view", "transfer_syntax", "photometric")),
            **quarantine_metadata(result.rejected, quarantine_uri),
            "frames_total": int(df["n_frames"].sum()) if df.height else 0,
            "patients": df["patient_key"].n_unique() if df.height else 0,
            "source": src.root,
        },
    )
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
