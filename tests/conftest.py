"""Shared fixtures: a local storage root, an S3 API server on localhost (moto server mode), data paths."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from assets.common.profiles import SAMPLE_DATA_DIR
from storage.root import S3Settings, Storage

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDRWR_SHARED_DATA") or REPO.parent / "shared" / "data")


def pytest_collection_modifyitems(config, items):
    """GPU tests are skipped on machines without CUDA."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """Each test gets its own project dir, storage root and Dagster home; nothing leaks between tests."""
    monkeypatch.setenv("MEDRWR_PROJECT_DIR", str(tmp_path / "project"))
    monkeypatch.setenv("MEDRWR_STORAGE_ROOT", str(tmp_path / "project" / "storage"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GX_ANALYTICS_ENABLED", "false")
    for key in [k for k in os.environ if k.startswith("MEDRWR_SOURCE_")] + [
        "MEDRWR_PROFILE",
        "MEDRWR_DATA_DIR",
    ]:
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "dagster_home").mkdir()


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(root=str(tmp_path / "project" / "storage"))


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The real data samples bundled for the smoke profile."""
    return SAMPLE_DATA_DIR


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The full released datasets beside the checkout (../shared/data); the bundled sample otherwise."""
    return SHARED_DATA if SHARED_DATA.is_dir() else SAMPLE_DATA_DIR


@pytest.fixture(scope="session")
def moto_server():
    """An S3 API server on 127.0.0.1 (moto server mode), started once per session and stopped after."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(moto_server, monkeypatch):
    """A fresh bucket on the moto server and the environment that points the pipeline at it.

    Returns the ``s3://bucket/prefix`` storage root; MEDRWR_STORAGE_ROOT and the endpoint are set.
    """
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("MEDRWR_S3_ENDPOINT_URL", moto_server)
    bucket = f"medrwr-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    root = f"s3://{bucket}/pipeline"
    monkeypatch.setenv("MEDRWR_STORAGE_ROOT", root)
    return root


@pytest.fixture
def s3_storage(s3_env) -> Storage:
    return Storage(root=s3_env, s3=S3Settings.from_env())
