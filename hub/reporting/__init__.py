"""Reporting: the Avro archive, replay, the DuckDB store, the indicators and their rendering."""
