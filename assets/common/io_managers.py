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

from retrieval.pointers import KbPointer
from storage.errors import UncommittedTable

from . import chain
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
            frame = self._read(storage, name, None)
            return self._apply_chain_pins(context, storage, name, frame)
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
        frames = [self._read(storage, name, k) for k in keys if k in present]
        if not frames:
            raise UnpublishedPartition(
                f"{name}: none of the partitions {keys} is published; materialize them first"
            )
        context.log.info(f"{name}: read partitions {sorted(k for k in keys if k in present)}")
        return pl.concat(frames, how="diagonal_relaxed")

    @staticmethod
    def _read(storage, name: str, partition: str | None) -> pl.DataFrame:
        """A partition as its gate record commits it (never a table a crashed publication left behind)."""
        try:
            return storage.read_published_table(name, partition)
        except UncommittedTable as e:
            raise UnpublishedPartition(str(e)) from e

    @staticmethod
    def _apply_chain_pins(context: InputContext, storage, name: str, frame: pl.DataFrame) -> pl.DataFrame:
        """A retraining chain reads one KB tag and one stage-2 checkpoint (:mod:`assets.common.chain`): the
        text-KB pointer is pinned to the run's ``medrwr/kb_tag`` and the image index to its
        ``medrwr/image_index_tag`` (the run is tagged with what it reads when it has none), a stage-2
        checkpoint other than its ``medrwr/checkpoint`` is refused."""
        if name not in (*chain.INDEX_PINS, "stage2_checkpoint"):
            return frame
        try:
            step = context.step_context
        except Exception:  # loaded outside a run (build_input_context): nothing to pin to
            return frame
        instance, run_id = step.instance, step.run_id
        run = instance.get_run_by_id(run_id)
        tags = dict(run.tags) if run else {}
        if name == "stage2_checkpoint":
            chain.check_checkpoint(frame, tags, run_id)
            return frame
        pointer = KbPointer.from_row(frame)
        frame, said = chain.pin_kb_pointer(
            frame,
            tags,
            lambda new: instance.add_run_tags(run_id, new),
            storage.kb_location(pointer.db),
            run_id,
            asset=name,
        )
        context.log.info(said)
        return frame

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
