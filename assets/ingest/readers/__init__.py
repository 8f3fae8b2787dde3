"""One module per released dataset layout, each with a ``read`` function and its ``LICENSE``.

The registries that map a dataset name to its reader are :mod:`assets.ingest.vqa` (``vqa_items``) and
:mod:`assets.ingest.text_qa` (``text_qa_items``); the shared helpers are in :mod:`.common`, the row
builders in :mod:`.vqa_row` and :mod:`.text_qa_row`. Pure functions: no Dagster here.
"""
