"""The plain storage layer: the storage root and its layout (``root``), raw source folders (``sources``),
partition keys (``keys``) and code provenance (``provenance``). Imports neither Dagster nor any other package of
this project except ``retrieval`` (for the LanceDB location)."""
