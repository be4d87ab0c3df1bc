"""Customer-path events: pydantic models that generate the Avro schemas in ``schemas/``.

Event classes live in ``hub.events.customer_path``, code sets in ``hub.events.enums``.
"""

from hub.events.base import AVRO_NAMESPACE, AvroRecord, CustomerPathEvent, Envelope
from hub.events.customer_path import EVENT_TYPES
from hub.events.sensitivity import Sensitivity

__all__ = [
    "AVRO_NAMESPACE",
    "EVENT_TYPES",
    "AvroRecord",
    "CustomerPathEvent",
    "Envelope",
    "Sensitivity",
]
