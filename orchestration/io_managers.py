"""An IO manager that stores polars DataFrames as Parquet under the storage root, one file per partition."""


import polars as pl
from dagster import ConfigurableIOManager, InputContext, OutputContext

from .resources import StorageResource


def table_name(context: InputContext | OutputContext) -> str:
    return "__".join(context.asset_key.path)


class ParquetTableIOManager(ConfigurableIOManager):
    """``tables/<asset>/<partition>.parquet``; a downstream asset reading several partitions gets them
    concatenated (partitions that were never materialized are skipped and logged)."""

    storage: StorageResource

    def handle_output(self, context: OutputContext, obj: pl.DataFrame) -> None:
        if obj is None:
            return
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"{table_name(context)}: expected a polars DataFrame, got {type(obj).__name__}")
        partition = context.partition_key if context.has_partition_key else None
        uri = self.storage.get().write_table(obj, table_name(context), partition)
        context.add_output_metadata({"path": uri})

    def load_input(self, context: InputContext) -> pl.DataFrame:
        storage = self.storage.get()
        name = table_name(context)
        if not context.has_asset_partitions:
            return storage.read_table(name)
        keys = context.asset_partition_keys
        if len(keys) == 1:
            return storage.read_table(name, keys[0])
        present = set(storage.table_partitions(name))
        missing = [k for k in keys if k not in present]
        if missing:
            context.log.info(f"{name}: partitions not materialized, skipped: {missing}")
        frames = [storage.read_table(name, k) for k in keys if k in present]
        if not frames:
            raise FileNotFoundError(f"{name}: none of the partitions {keys} is materialized")
        return pl.concat(frames, how="diagonal_relaxed")
