"""The exactly-once event sink every inbound connector writes through, with its receipts."""

from hub.sink.base import (
    EventIdTaken,
    EventNotWritable,
    EventSink,
    IdempotencyConflict,
    MemoryReceipts,
    Receipt,
    ReceiptBook,
    ReceiptStore,
    SinkUnavailable,
    SourcePosition,
    Submission,
    SubmissionRefused,
)

__all__ = [
    "EventIdTaken",
    "EventNotWritable",
    "EventSink",
    "IdempotencyConflict",
    "MemoryReceipts",
    "Receipt",
    "ReceiptBook",
    "ReceiptStore",
    "SinkUnavailable",
    "SourcePosition",
    "Submission",
    "SubmissionRefused",
]
