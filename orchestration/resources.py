"""Dagster resources: configured from the environment so that tests and production differ only there."""


from dagster import ConfigurableResource
from pydantic import Field

from assets.readers.source import SourceDir

from .profiles import get_profile
from .storage import S3Settings, Storage, default_storage_root


class StorageResource(ConfigurableResource):
    """The one storage root: a local folder or ``s3://bucket/prefix`` (``MEDRWR_STORAGE_ROOT``)."""

    root: str | None = Field(
        default=None,
        description="local folder or s3://bucket/prefix; unset: MEDRWR_STORAGE_ROOT, else <project>/.medrwr/storage",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (else MEDRWR_S3_ENDPOINT_URL / AWS_ENDPOINT_URL)"
    )

    def get(self) -> Storage:
        s3 = S3Settings.from_env()
        if self.s3_endpoint_url:
            s3 = S3Settings(self.s3_endpoint_url, s3.region, s3.access_key_id, s3.secret_access_key)
        return Storage(root=self.root or default_storage_root(), s3=s3)


class SourcesResource(ConfigurableResource):
    """Where the released dataset files are read from, by profile (``MEDRWR_PROFILE``)."""

    profile: str | None = Field(default=None, description="smoke (default) or full")

    def source(self, dataset: str) -> SourceDir:
        return SourceDir(get_profile(self.profile).source_uri(dataset))
