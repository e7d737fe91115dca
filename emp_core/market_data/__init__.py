"""Market data: schemas, readers, validation, sources, ingest and quality checks."""
