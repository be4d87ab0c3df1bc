"""The ingest REST API (FastAPI): municipal systems, providers and payers POST events."""
