"""The plain storage layer: the storage root and its layout (``root``, image paths in ``layout``), raw source
folders (``sources``), their shared refusals (``errors``), partition keys (``keys``), model pointers
(``pointers``) and code provenance (``provenance``). Imports neither Dagster nor any other package of
this project except ``retrieval`` (for the LanceDB location)."""
