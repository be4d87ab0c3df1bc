"""What the benches that run ``hub serve`` share: the clients file of their one sender."""

from __future__ import annotations

import hashlib

from hub.codes import employment_areas


def clients_toml(key: str, event_type: str) -> str:
    """One municipal system, API key *key*, that may send *event_type* for every area."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    areas = ", ".join(f'"{code}"' for code in sorted(employment_areas()))
    return f"""
[[clients]]
client_id = "bench-municipal-system"
kind = "municipal_system"
source_system = "urn:fi:te-hub:bench"
api_key_sha256 = "{digest}"
event_types = ["{event_type}"]
employment_areas = [{areas}]
"""
