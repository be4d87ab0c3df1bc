"""Pick the framing new values are written in from the settings.

Only writing depends on the settings: both serializers read values of either framing by their
marker byte, so switching a registry on (or off) never makes the log's history unreadable.
"""

from __future__ import annotations

from hub.serde.base import EventSerializer
from hub.serde.catalog import SchemaCatalog, default_catalog
from hub.serde.confluent import ConfluentSerializer
from hub.serde.registry import SchemaRegistryClient
from hub.serde.single_object import SingleObjectSerializer
from hub.settings import HubSettings


def build_serializer(
    settings: HubSettings, catalog: SchemaCatalog | None = None
) -> EventSerializer:
    """Write single-object encoding by default, the Confluent wire format when a registry is
    set; read both either way (a Confluent value without a registry is a clear
    :class:`~hub.serde.base.RegistryRequired` error).

    The Confluent serializer looks ids up lazily; call its ``prepare``/``aprepare`` at start-up
    to fail fast when the schemas were not registered on deploy (``hub schemas register``).
    """
    catalog = catalog if catalog is not None else default_catalog()
    if settings.schema_registry_url:
        return ConfluentSerializer(SchemaRegistryClient(settings.schema_registry_url), catalog)
    return SingleObjectSerializer(catalog)
