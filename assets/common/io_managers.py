"""The IO manager that loads published tables (Parquet under the storage root, one file per partition).

Table assets publish themselves after their gates pass (``assets.common.gates``) and return a
``MaterializeResult``, so this IO manager mostly loads. Its rule: downstream work never reads a partition
whose latest gate failed, and never silently does without a registered partition:

- a partition whose latest gate failed: the load fails, naming the partition, the failed checks and the run;
- a dynamic partition (a registered source) with no published data: the load fails, naming it;
- a static partition that was never materialized (a dataset the profile does not plan): skipped and logged
  (the loaded and skipped keys are in the step's event log).
"""

import polars as pl
from dagster import ConfigurableIOManager, DynamicPartitionsDefinition, InputContext, OutputContext

from .resources import StorageResource


def table_name(context: InputContext | OutputContext) -> str:
    return "__".join(context.asset_key.path)


class UnpublishedPartition(RuntimeError):
    """A partition that downstream work must not read (its gate failed, or it has no published data)."""


class ParquetTableIOManager(ConfigurableIOManager):
    """``tables/<asset>/<partition>.parquet``; a downstream asset reading several partitions gets them
    concatenated, under the rules of the module docstring."""

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
            self._refuse_failed(storage, name, None)
            return storage.read_table(name)
        keys = list(context.asset_partition_keys)
        dynamic = isinstance(context.asset_partitions_def, DynamicPartitionsDefinition)
        present = set(storage.table_partitions(name))
        for key in keys:
            self._refuse_failed(storage, name, key)
        missing = [k for k in keys if k not in present]
        if missing and (dynamic or len(keys) == 1):
            raise UnpublishedPartition(
                f"{name}: partition(s) {missing} have no published data. "
                + (
                    "They are registered sources: materialize them, or remove the partitions you no longer "
                    "want (Dagster UI > asset > partitions) before running downstream work."
                    if dynamic
                    else "Materialize it first."
                )
            )
        if missing:
            context.log.warning(f"{name}: partitions never materialized, not read: {missing}")
        frames = [storage.read_table(name, k) for k in keys if k in present]
        if not frames:
            raise UnpublishedPartition(
                f"{name}: none of the partitions {keys} is published; materialize them first"
            )
        context.log.info(f"{name}: read partitions {sorted(k for k in keys if k in present)}")
        return pl.concat(frames, how="diagonal_relaxed")

    @staticmethod
    def _refuse_failed(storage, name: str, partition: str | None) -> None:
        record = storage.read_gate_record(name, partition)
        if record and record.get("status") == "failed":
            label = f"{name}[{partition}]" if partition else name
            raise UnpublishedPartition(
                f"{label}: its latest gate failed (checks {record.get('failed_checks')} in run "
                f"{record.get('run_id')} at {record.get('at')}), so downstream work may not read it. Fix the "
                "source or configuration and materialize it again."
            )
