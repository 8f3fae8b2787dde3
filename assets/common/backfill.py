"""The backfill policies the assets declare: how a backfill over partitions is cut into runs."""

from dagster import BackfillPolicy

PER_PARTITION = BackfillPolicy.multi_run(1)  # a backfill runs one partition per run
WHOLE = BackfillPolicy.single_run()  # one run for the whole asset
