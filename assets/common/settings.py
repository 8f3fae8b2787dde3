"""Every setting of the pipeline in one place: its environment variable, where it goes, and its default.

Deployment settings (where data lives, which models, secrets) are fields of Dagster resources fed by
``EnvVar`` when the variable is set (Dagster resolves it at run time and shows it redacted), else the default
below. Run knobs (seeds, limits, thresholds) are Dagster ``Config`` on the assets: they appear in the
launchpad and in each run's record; the main command fills them from the profile. The README's settings
table is this list (``tests/test_settings.py`` keeps the two equal).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dagster import EnvVar


@dataclass(frozen=True)
class Setting:
    """One environment variable: the resource field (or runner option) it feeds, its default, its meaning."""

    env: str
    feeds: str
    default: str
    description: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "MEDRWR_STORAGE_ROOT",
        "resource `storage.root`",
        "`<project>/.medrwr/storage`",
        "published storage root: a local folder or `s3://bucket/prefix`",
    ),
    Setting(
        "MEDRWR_S3_ENDPOINT_URL",
        "resource `storage.s3_endpoint_url`",
        "AWS",
        "S3 API endpoint for non-AWS object stores (MinIO, moto); credentials from `AWS_*`",
    ),
    Setting(
        "MEDRWR_RESTRICTED_ROOT",
        "resource `deid.restricted_root`",
        "`<project>/.medrwr/restricted`",
        "restricted location outside the published root: key-to-path maps, staging of patient data, "
        "generated synthetic raw sources",
    ),
    Setting(
        "MEDRWR_DEID_SALT",
        "resource `deid.salt` (secret)",
        "unset: only the synthetic source runs",
        "HMAC salt for patient keys, date shifts and UID remapping; "
        "required for every non-synthetic echo source: 32 random bytes as hex or base64, made with "
        '`python -c "import secrets; print(secrets.token_hex(32))"` (weaker ones are refused)',
    ),
    Setting(
        "MEDRWR_PROFILE",
        "resource `sources.profile`, main command",
        "`smoke`",
        "`smoke` or `small` (bundled samples; tiny random model or SmolLM2-135M-Instruct) or `full` "
        "(`MEDRWR_DATA_DIR`); `--profile` of the main command wins",
    ),
    Setting(
        "MEDRWR_DATA_DIR",
        "resource `sources.data_dir`",
        "bundled `assets/sample_data` (smoke, small)",
        "folder or `s3://` prefix with one folder per dataset in its released layout (required by `full`)",
    ),
    Setting(
        "MEDRWR_SOURCE_<DATASET>",
        "resource `sources.overrides`",
        "`<data dir>/<dataset folder>`",
        "one dataset's folder elsewhere, e.g. `MEDRWR_SOURCE_PATH_VQA`, `MEDRWR_SOURCE_PUBMEDVISION`; "
        "an echo site's folder is `MEDRWR_SOURCE_ECHO_<SITE>` (`MEDRWR_SOURCE_ECHO_SITE_0007` for "
        "`site-0007`), read from the environment when the run starts and never stored in Dagster's "
        "instance or the recorded settings (a patient-data path may name a person)",
    ),
    Setting(
        "MEDRWR_TEXT_EMBEDDER",
        "resource `kb_models.text_model`",
        "`sentence-transformers/all-MiniLM-L6-v2` (bundled)",
        "text embedder: hub id or path (production `BAAI/bge-m3` or `ncbi/MedCPT-Query-Encoder`)",
    ),
    Setting(
        "MEDRWR_IMAGE_EMBEDDER",
        "resource `kb_models.image_model`",
        "`ViT-S-32` (random weights, offline)",
        "open_clip image embedder (production BiomedCLIP `hf-hub:` id)",
    ),
    Setting(
        "MEDRWR_DEVICE", "resource `kb_models.device`", "auto (`cuda` when available)", "device for embedders"
    ),
    Setting(
        "MEDRWR_BASE_MODEL",
        "resource `training.base_model`",
        "`Qwen/Qwen2.5-VL-7B-Instruct` (`full`)",
        "base policy: hub id, local folder or `s3://` prefix; `smoke` builds a tiny model instead",
    ),
    Setting(
        "MEDRWR_TRAIN_LAUNCHER",
        "resource `training.launcher`",
        "`subprocess`",
        "`subprocess` (Pipes, local) or `k8s` (Pipes, a GPU pod from `deploy/k8s/trainer-pod.yaml`)",
    ),
    Setting(
        "MEDRWR_ACCELERATE_CONFIG",
        "resource `training.accelerate_config`",
        "unset: ZeRO-2 (`training/accelerate/zero2.yaml`) in `full`, plain `python` otherwise",
        "`accelerate launch` config, e.g. `training/accelerate/zero2.yaml` (DeepSpeed ZeRO-2)",
    ),
    Setting(
        "MEDRWR_WORK_DIR",
        "resource `training.work_dir`",
        "`<project>/.medrwr/work`",
        "checkpoints of running stages (a killed stage resumes from here); a shared volume on Kubernetes",
    ),
    Setting(
        "MEDRWR_TRAINER_IMAGE",
        "resource `training.trainer_image`",
        "unset",
        "trainer image for `k8s` launches",
    ),
    Setting(
        "MEDRWR_K8S_NAMESPACE", "resource `training.k8s_namespace`", "`medrwr`", "namespace of trainer pods"
    ),
    Setting(
        "MEDRWR_GIT_COMMIT",
        "lineage",
        "`git rev-parse HEAD`",
        "code version recorded in manifests (set it in images)",
    ),
    Setting(
        "MEDRWR_VQA_DATASETS",
        "main command (`full`)",
        "every VQA dataset whose folder is in `MEDRWR_DATA_DIR`",
        "VQA partitions the `full` main command materializes",
    ),
    Setting(
        "MEDRWR_TEXT_QA_DATASETS",
        "main command (`full`)",
        "every text-QA dataset (`medqa`, `medmcqa`, `pubmedqa`) whose folder is in `MEDRWR_DATA_DIR`",
        "text-QA partitions the `full` main command materializes",
    ),
    Setting(
        "MEDRWR_ECHO_SOURCES",
        "main command (`full`)",
        "`synthetic`",
        "echo sources (dynamic partitions) of the `full` main command",
    ),
    Setting(
        "MEDRWR_KB_SOURCES",
        "main command (`full`)",
        "`medquad,pubmedqa,slake_kg,medmcqa_exp`",
        "KB sources (dynamic partitions) of the `full` main command",
    ),
    Setting(
        "MEDRWR_BENCHMARKS",
        "main command (`full`)",
        "every benchmark whose dataset is ingested, plus `ecbench` (MedXpertQA-MM and MMMU-H&M when their "
        "folders are there)",
        "benchmarks (partitions of `eval_results`) of the `full` main command; the report lists which of the "
        "paper's benchmarks were evaluated",
    ),
    Setting(
        "MEDRWR_KB_SENSOR_COOLDOWN_S",
        "sensor `kb_sources_sensor`",
        "`3600`",
        "seconds after a KB source's refresh run before another is requested for it (changes seen meanwhile "
        "wait in the cursor and fire once)",
    ),
    Setting(
        "MEDRWR_RETRAIN_STAGES",
        "sensor `kb_index_retrain_sensor`",
        "`stage2`",
        "what a new `kb_text_index` retrains: `stage2` (stage 2 only) or `all` (stage 1 and stage 2)",
    ),
    Setting(
        "MEDRWR_RETRAIN_COOLDOWN_S",
        "sensor `kb_index_retrain_sensor`",
        "`21600`",
        "seconds after a retraining request before another (new indexes meanwhile fire once afterwards)",
    ),
    Setting(
        "MEDRWR_SENSORS_RUNNING",
        "sensors' default status",
        "`0` in `smoke`, `1` in `full`",
        "`1`: the KB sensors start RUNNING when the code location loads; `0`: STOPPED (turn on in the UI)",
    ),
    Setting(
        "MEDRWR_LOG_LEVEL",
        "main command",
        "`WARNING`",
        "console log level of the main command (the event log keeps all)",
    ),
    Setting(
        "MEDRWR_PROJECT_DIR",
        "main command, defaults",
        "current directory",
        "where `.medrwr/` (storage, Dagster home) is created",
    ),
    Setting(
        "DAGSTER_HOME",
        "Dagster instance",
        "`<project>/.medrwr/dagster_home`",
        "Dagster instance (runs, event log, schedules)",
    ),
)


def env_or(name: str, default=None):
    """``EnvVar(name)`` when the variable is set (resolved by Dagster at run time), else ``default``."""
    return EnvVar(name) if os.environ.get(name) else default


ECHO_SOURCE_PREFIX = "MEDRWR_SOURCE_ECHO_"
"""Echo (patient-data) source folders: read at run time only (:func:`echo_source_env`), never resource
config (Dagster stores a resource's config in every run snapshot) nor recorded settings."""


def source_overrides(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``{dataset: uri}`` from every ``MEDRWR_SOURCE_<DATASET>`` variable (dataset lower-cased), except the
    echo sources' ``MEDRWR_SOURCE_ECHO_<SITE>`` (:func:`echo_source_env`)."""
    env = os.environ if environ is None else environ
    prefix = "MEDRWR_SOURCE_"
    return {
        k[len(prefix) :].lower(): v
        for k, v in sorted(env.items())
        if k.startswith(prefix) and not k.startswith(ECHO_SOURCE_PREFIX) and v
    }


def echo_source_variable(site: str) -> str:
    """The variable naming the folder of echo source ``site`` (``MEDRWR_SOURCE_ECHO_SITE_0007``)."""
    return ECHO_SOURCE_PREFIX + site.upper().replace("-", "_")


def echo_source_env(site: str, environ: dict[str, str] | None = None) -> str | None:
    """The folder of echo source ``site`` from the environment of the running process (like a Dagster
    ``EnvVar``, resolved at run time), or ``None``."""
    env = os.environ if environ is None else environ
    return env.get(echo_source_variable(site)) or None


def sensors_running(environ: dict[str, str] | None = None) -> bool:
    """Whether the sensors default to RUNNING: ``MEDRWR_SENSORS_RUNNING`` when set, else only in ``full``."""
    env = os.environ if environ is None else environ
    flag = env.get("MEDRWR_SENSORS_RUNNING", "").strip().lower()
    if flag:
        return flag in ("1", "true", "yes", "on")
    return env.get("MEDRWR_PROFILE", "smoke") == "full"


def env_seconds(name: str, default: float, environ: dict[str, str] | None = None) -> float:
    """``float($name)`` when set, else ``default`` (a negative value counts as 0); a sensor's cool-down."""
    env = os.environ if environ is None else environ
    raw = env.get(name, "").strip()
    try:
        return max(0.0, float(raw)) if raw else default
    except ValueError as e:
        raise ValueError(f"{name}={raw!r}: expected a number of seconds") from e


def retrain_stages(environ: dict[str, str] | None = None) -> str:
    """``MEDRWR_RETRAIN_STAGES``: ``stage2`` (default) or ``all``."""
    env = os.environ if environ is None else environ
    value = env.get("MEDRWR_RETRAIN_STAGES", "").strip() or "stage2"
    if value not in ("stage2", "all"):
        raise ValueError(f"MEDRWR_RETRAIN_STAGES={value!r}: use 'stage2' or 'all'")
    return value


def readme_table() -> str:
    """The Markdown table of :data:`SETTINGS` that README.md carries."""
    rows = ["| variable | feeds | default | what |", "|---|---|---|---|"]
    rows += [f"| `{s.env}` | {s.feeds} | {s.default} | {s.description} |" for s in SETTINGS]
    return "\n".join(rows)
