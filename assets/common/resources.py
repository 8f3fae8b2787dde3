"""Dagster resources: deployment settings (where data lives, which models, secrets).

Each field is fed by an environment variable through ``EnvVar`` in :mod:`orchestration.definitions` (see
:mod:`assets.common.settings` for the list and the defaults), so tests and production differ only there.
Run knobs are not here: they are ``Config`` classes on the assets.
"""

from __future__ import annotations

import posixpath
from functools import lru_cache
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from retrieval.embedders import OFFLINE_IMAGE_ARCH, OFFLINE_TEXT_MODEL, ImageEmbedder, TextEmbedder
from storage.keys import validate_partition_key, validate_site_key
from storage.root import S3Settings, Storage, default_storage_root, project_dir
from storage.sources import SourceDir

from .profiles import BUNDLED_PROFILES, DATASET_FOLDERS, SAMPLE_DATA_DIR
from .settings import echo_source_env


class StorageResource(ConfigurableResource):
    """The one published storage root: a local folder or ``s3://bucket/prefix``."""

    root: str | None = Field(
        default=None,
        description="local folder or s3://bucket/prefix "
        "(MEDRWR_STORAGE_ROOT); unset: <project>/.medrwr/storage",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 API endpoint for non-AWS stores (MEDRWR_S3_ENDPOINT_URL); credentials from AWS_*",
    )

    def get(self) -> Storage:
        s3 = S3Settings.from_env()
        if self.s3_endpoint_url:
            s3 = S3Settings(self.s3_endpoint_url, s3.region, s3.access_key_id, s3.secret_access_key)
        return Storage(root=self.root or default_storage_root(), s3=s3)


class SourcesResource(ConfigurableResource):
    """Where the released dataset files are read from: a profile's data folder, or one override per
    dataset. An echo site's folder override is not config: it is read from ``MEDRWR_SOURCE_ECHO_<SITE>``
    when the run starts (:meth:`echo_source_uri`), so no run snapshot in Dagster's instance names it."""

    profile: str = Field(
        default="smoke", description="smoke or small (bundled samples) or full (MEDRWR_PROFILE)"
    )
    data_dir: str | None = Field(
        default=None,
        description="folder or s3:// prefix with one folder per dataset "
        "(MEDRWR_DATA_DIR); unset: the bundled samples (smoke and small only)",
    )
    overrides: dict[str, str] = Field(
        default_factory=dict, description="dataset -> folder or s3:// URI (MEDRWR_SOURCE_<DATASET>)"
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3 API endpoint of the raw sources")

    def data_root(self) -> str:
        if self.data_dir:
            return self.data_dir
        if self.profile in BUNDLED_PROFILES:
            return str(SAMPLE_DATA_DIR)
        raise ValueError(
            f"profile {self.profile!r} needs MEDRWR_DATA_DIR (a folder or s3:// prefix with one "
            "folder per dataset in its released layout)"
        )

    def source_uri(self, dataset: str) -> str:
        """Folder of ``dataset``: its override, else ``<data dir>/<dataset folder>``. The name is checked
        as one safe file name first (:func:`storage.keys.validate_partition_key`), whatever it comes from (a
        partition key added in the UI, a sensor): ``..`` or ``../other`` never reaches the file system."""
        if dataset in self.overrides:
            return self.overrides[dataset]
        folder = DATASET_FOLDERS.get(dataset) or validate_partition_key(dataset)
        return posixpath.join(self.data_root(), folder)

    def echo_source_uri(self, key: str) -> str:
        """Folder of echo source ``key`` (an opaque site code, :func:`storage.keys.validate_site_key`):
        ``MEDRWR_SOURCE_ECHO_<KEY>`` from the environment, else ``<data dir>/echo/<key>``."""
        validate_site_key(key)
        return echo_source_env(key) or posixpath.join(self.data_root(), "echo", key)

    def has_echo_override(self, key: str) -> bool:
        """Whether ``MEDRWR_SOURCE_ECHO_<KEY>`` names a folder for echo source ``key``."""
        return echo_source_env(key) is not None

    def has_override(self, dataset: str) -> bool:
        return dataset in self.overrides

    def _s3(self) -> S3Settings:
        s3 = S3Settings.from_env()
        if self.s3_endpoint_url:
            s3 = S3Settings(self.s3_endpoint_url, s3.region, s3.access_key_id, s3.secret_access_key)
        return s3

    def source(self, dataset: str) -> SourceDir:
        return SourceDir(self.source_uri(dataset), s3=self._s3())

    def echo_source(self, key: str) -> SourceDir:
        return SourceDir(self.echo_source_uri(key), s3=self._s3())

    def data_root_dir(self) -> SourceDir:
        """The data folder itself (where new KB corpus folders are discovered)."""
        return SourceDir(self.data_root(), s3=self._s3())


class DeidResource(ConfigurableResource):
    """Patient-data settings: the de-identification salt (a secret) and the restricted location outside the
    published root (key-to-path maps, staging of patient data, generated raw sources)."""

    salt: str | None = Field(
        default=None, description="HMAC salt (MEDRWR_DEID_SALT); required for every non-synthetic echo source"
    )
    restricted_root: str | None = Field(
        default=None,
        description="restricted folder or s3:// prefix "
        "(MEDRWR_RESTRICTED_ROOT); unset: <project>/.medrwr/restricted",
    )

    def restricted(self, storage: Storage) -> Storage:
        """The restricted location as a private :class:`Storage` (files ``0600`` whatever the umask; same S3
        settings as the published root)."""
        root = self.restricted_root or str(project_dir() / ".medrwr" / "restricted")
        if (
            not root.startswith("s3://")
            and Path(root).resolve().is_relative_to(Path(storage.root))
            and not storage.is_s3
        ):
            raise ValueError(
                f"the restricted root {root} lies inside the published storage root {storage.root}; "
                "set MEDRWR_RESTRICTED_ROOT to a folder outside it"
            )
        return Storage(root=root, s3=storage.s3, private=True)


@lru_cache(maxsize=4)
def _text(model_id: str, device: str | None, batch_size: int) -> TextEmbedder:
    return TextEmbedder(model_id, device=device, batch_size=batch_size)


@lru_cache(maxsize=4)
def _image(model_id: str, device: str | None) -> ImageEmbedder:
    return ImageEmbedder(model_id, device=device)


class KnowledgeModelsResource(ConfigurableResource):
    """Embedders for the KB. Defaults run offline (MiniLM; open_clip ViT-S-32 with random weights);
    production sets ``MEDRWR_TEXT_EMBEDDER=BAAI/bge-m3`` (or a path) and
    ``MEDRWR_IMAGE_EMBEDDER=hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``."""

    text_model: str = Field(
        default=OFFLINE_TEXT_MODEL, description="sentence-transformers hub id or path (MEDRWR_TEXT_EMBEDDER)"
    )
    image_model: str = Field(
        default=OFFLINE_IMAGE_ARCH, description="open_clip architecture or hf-hub: id (MEDRWR_IMAGE_EMBEDDER)"
    )
    device: str | None = Field(default=None, description="cuda / cpu; auto when unset (MEDRWR_DEVICE)")
    batch_size: int = Field(default=64, description="text embedding batch size")

    def text_embedder(self) -> TextEmbedder:
        return _text(self.text_model, self.device, self.batch_size)

    def image_embedder(self) -> ImageEmbedder:
        return _image(self.image_model, self.device)


DEFAULT_FULL_ACCELERATE = "training/accelerate/zero2.yaml"
"""The ``full`` profile's accelerate config when ``MEDRWR_ACCELERATE_CONFIG`` is unset."""


class TrainingResource(ConfigurableResource):
    """Where and how GRPO stages run: the production base model, the launcher (a local subprocess, or a GPU
    pod on Kubernetes through ``PipesK8sClient``), the accelerate config, and the work folder that holds
    checkpoints between a killed run and its retry (on Kubernetes: a volume mounted in the run pod and the
    trainer pod)."""

    base_model: str = Field(
        default="Qwen/Qwen2.5-VL-7B-Instruct",
        description="production base policy: hub id, "
        "local folder or s3:// prefix (MEDRWR_BASE_MODEL); smoke builds a tiny model",
    )
    launcher: str = Field(default="subprocess", description="subprocess or k8s (MEDRWR_TRAIN_LAUNCHER)")
    accelerate_config: str | None = Field(
        default=None,
        description="accelerate YAML, e.g. "
        "training/accelerate/zero2.yaml (MEDRWR_ACCELERATE_CONFIG); unset: ZeRO-2 in full, plain python "
        "otherwise",
    )
    work_dir: str | None = Field(
        default=None, description="checkpoint work folder (MEDRWR_WORK_DIR); unset: <project>/.medrwr/work"
    )
    trainer_image: str | None = Field(
        default=None, description="trainer image for k8s (MEDRWR_TRAINER_IMAGE)"
    )
    k8s_namespace: str = Field(
        default="medrwr", description="namespace of trainer pods (MEDRWR_K8S_NAMESPACE)"
    )

    def work_root(self) -> str:
        return self.work_dir or str(project_dir() / ".medrwr" / "work")

    def accelerate_config_for(self, profile: str) -> str | None:
        """The ``accelerate launch`` config of a stage run: the configured one; for the ``full`` profile
        without one, DeepSpeed ZeRO-2 (``training/accelerate/zero2.yaml``: a 7B full fine-tune plus its
        reference model does not fit one plain process on one GPU); else None (plain ``python``). On
        Kubernetes the path is relative to the trainer image's working directory (``/opt/medrwr``)."""
        if self.accelerate_config:
            return self.accelerate_config
        if profile != "full":
            return None
        if self.launcher == "k8s":
            return DEFAULT_FULL_ACCELERATE
        return str(project_dir() / DEFAULT_FULL_ACCELERATE)

    def child_env(self) -> dict[str, str]:
        """Environment of the trainer process: quiet TRL notices, no hub access from tests' offline
        machines."""
        import os

        env = {"TRL_EXPERIMENTAL_SILENCE": "1", "TOKENIZERS_PARALLELISM": "false"}
        for name in ("HF_HUB_OFFLINE", "HF_HOME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            if os.environ.get(name):
                env[name] = os.environ[name]
        return env

    def launch(self, context, command: list[str], subprocess_client):
        """Run ``command`` through Pipes: ``subprocess_client`` locally, a GPU pod on Kubernetes; returns the
        Pipes client's invocation (``.get_results()``)."""
        if self.launcher == "subprocess":
            return subprocess_client.run(command=command, context=context, env=self.child_env())
        if self.launcher != "k8s":
            raise ValueError(f"MEDRWR_TRAIN_LAUNCHER={self.launcher!r}: use 'subprocess' or 'k8s'")
        if not self.trainer_image:
            raise ValueError(
                "MEDRWR_TRAIN_LAUNCHER=k8s needs MEDRWR_TRAINER_IMAGE (deploy/Dockerfile.trainer)"
            )
        import yaml
        from dagster_k8s import PipesK8sClient

        spec = yaml.safe_load(
            (Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "trainer-pod.yaml").read_text()
        )
        return PipesK8sClient().run(
            context=context,
            image=self.trainer_image,
            command=command,
            namespace=self.k8s_namespace,
            env=self.child_env(),
            base_pod_meta=spec["base_pod_meta"],
            base_pod_spec=spec["base_pod_spec"],
        )
