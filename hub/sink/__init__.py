"""The exactly-once event sink every inbound connector writes through, with its receipts."""

from hub.sink.base import (
    EventSink,
    Receipt,
    ReceiptBook,
    SinkUnavailable,
    SourcePosition,
    Submission,
)

__all__ = [
    "EventSink",
    "Receipt",
    "ReceiptBook",
    "SinkUnavailable",
    "SourcePosition",
    "Submission",
]
