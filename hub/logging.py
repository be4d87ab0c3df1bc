"""Structured logging for the hub, with personal data redacted before anything is written.

One pipeline serves both structlog calls and standard-library loggers (aiokafka, faststream,
httpx), so that third-party records get the same JSON shape and, above all, the same redaction.
Redaction runs last, after exceptions have been formatted to text, so a personal identity code in
an exception message or traceback is caught too.

Redaction has two rules:

* anything shaped like a personal identity code (henkilötunnus), in any string, dict key, nested
  value or traceback, becomes ``[REDACTED:identity-code]``, also when glued to other characters
  (see :func:`hub.identity.identity_code_spans`);
* the value of a key in :data:`SENSITIVE_KEYS` becomes ``[REDACTED]``, whatever it holds: every
  field the event schemas mark ``pii`` (names, contact, health, membership; derived from the
  models at import, so a field marked sensitive is redacted from the day it is added) and a few
  other names of such data. Keys are compared case-insensitively and without ``_``/``-``, so
  ``firstName`` and ``first-name`` count as ``first_name``.

Names inside free text ("Matti registered") cannot be recognised: log pseudonyms, never names.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from contextvars import Token
from types import TracebackType
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from hub.events.customer_path import EVENT_TYPES
from hub.events.sensitivity import pii_field_names
from hub.identity.hetu import replace_identity_codes
from hub.settings import HubSettings, get_settings

REDACTED: Final = "[REDACTED]"
#: Client libraries whose DEBUG logs contain raw message payloads.
PAYLOAD_LOGGING_LIBRARIES: Final = ("aiokafka", "kafka")
REDACTED_IDENTITY_CODE: Final = "[REDACTED:identity-code]"

#: Other keys that name personal data in code and library logs, though no schema field is called
#: so. Plain ``name`` is deliberately absent: loggers, municipalities and events have names too.
OTHER_SENSITIVE_KEYS: Final[frozenset[str]] = frozenset(
    {
        "given_name",
        "family_name",
        "full_name",
        "person_name",
        "email_address",
        "phone_number",
        "address",
        "street_address",
        "identity_code",
        "hetu",
        "henkilotunnus",
    }
)
#: Keys whose values are redacted whatever they hold: the ``pii`` fields of every event schema
#: and :data:`OTHER_SENSITIVE_KEYS`.
SENSITIVE_KEYS: Final[frozenset[str]] = pii_field_names(EVENT_TYPES.values()) | OTHER_SENSITIVE_KEYS

_HANDLER_NAME: Final = "hub"
_MAX_DEPTH: Final = 12


def _key_form(key: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


_SENSITIVE_FORMS: Final = frozenset(_key_form(k) for k in SENSITIVE_KEYS)


def is_sensitive_key(key: object) -> bool:
    return _key_form(key) in _SENSITIVE_FORMS


def redact_text(text: str) -> str:
    """Replace everything shaped like an identity code in *text*."""
    return replace_identity_codes(text, REDACTED_IDENTITY_CODE)


def redact_value(value: object, _depth: int = 0) -> object:
    """Redacted copy of *value*; any object that is not a plain scalar or container becomes text.

    Stringifying unknown objects is deliberate: the renderer would ``repr()`` them later, after
    redaction had run, and a model's repr can hold a code.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if _depth >= _MAX_DEPTH:
        return "[REDACTED:too-deep]"
    if isinstance(value, Mapping):
        return {
            redact_value(k, _depth + 1) if isinstance(k, str) else k: (
                REDACTED if is_sensitive_key(k) else redact_value(v, _depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, _depth + 1) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return redact_text(str(value))


def redact_personal_data(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """structlog processor: redact identity codes everywhere and sensitive keys' values.

    It formats a pending ``exc_info`` itself first, so it is safe wherever it sits in a chain.
    """
    if event_dict.get("exc_info"):
        event_dict = structlog.processors.format_exc_info(logger, method_name, event_dict)
    event_dict.pop("exc_info", None)
    redacted: EventDict = {
        redact_text(key): REDACTED if is_sensitive_key(key) else redact_value(value)
        for key, value in event_dict.items()
    }
    return redacted


def _drop_formatter_attributes(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> EventDict:
    """Drop ``message``/``asctime``: other handlers' formatters set them on the shared record,
    and ExtraAdder would then repeat the message as if it were an ``extra=`` value."""
    event_dict.pop("message", None)
    event_dict.pop("asctime", None)
    return event_dict


def _level_number(name: str) -> int:
    levels = logging.getLevelNamesMapping()
    try:
        return levels[name.strip().upper()]
    except KeyError:
        raise ValueError(
            f"unknown log level {name!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        ) from None


def configure_logging(settings: HubSettings | None = None, *, stream: TextIO | None = None) -> None:
    """Route structlog and standard logging through one redacting pipeline to *stream*.

    JSON lines (timestamp in ISO UTC, level, logger, event, context) when ``log_json`` is true,
    readable console lines otherwise. Output goes to standard error by default, leaving standard
    output to CLI commands. Safe to call again: it replaces only the handler it installed.
    """
    settings = settings or get_settings()
    level = _level_number(settings.log_level)
    out = stream or sys.stderr

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: cached loggers would ignore a later reconfiguration and
        # structlog.testing.capture_logs(); the per-call cost is negligible at hub volumes.
        cache_logger_on_first_use=False,
    )

    renderer: Processor
    if settings.log_json:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    formatter = structlog.stdlib.ProcessorFormatter(
        # Records from standard-library loggers: same fields, plus their ``extra=`` values.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_formatter_attributes],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text here so that redaction, which comes next, sees them.
            structlog.processors.format_exc_info,
            redact_personal_data,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiokafka's DEBUG records print raw record values ("Sending (key=... value=b'...')"): Avro
    # bytes with identity codes and names inside escape sequences that no pattern can reliably
    # find. Those loggers never go below INFO, whatever the hub's own level is.
    for name in PAYLOAD_LOGGING_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    _adopt_faststream_loggers()


def _adopt_faststream_loggers() -> None:
    """Send FastStream's loggers through the redacting handler instead of their own.

    Importing FastStream gives its ``faststream`` logger a plain stderr handler with
    ``propagate = False`` (and each broker a ``faststream.access.*`` one), so its records, and any
    child logger's, would bypass redaction. The import is forced here so that a later import
    cannot install that handler after this ran.
    """
    import faststream._internal.logger  # noqa: F401  (creates the "faststream" logger)

    for name in list(logging.root.manager.loggerDict):
        if name == "faststream" or name.startswith("faststream."):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger named like a standard-library logger (use ``__name__``)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


class EventContext:
    """Handle of a binding made by :func:`bind_event_context`; exiting it restores the old one."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Mapping[str, Token[Any]]) -> None:
        self._tokens = tokens

    def reset(self) -> None:
        structlog.contextvars.reset_contextvars(**self._tokens)

    def __enter__(self) -> EventContext:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.reset()


def bind_event_context(event_id: str, correlation_id: str) -> EventContext:
    """Make every log line in this context (task or thread) carry the event's ids.

    Binds at once, so a plain call works for the rest of a consumer task; used as
    ``with bind_event_context(...):`` it also restores the previous ids on exit, which matters
    when one task handles many events. Both ids are required so that a stale correlation id of
    the previous event can never linger (pass the event id when there is no correlation id).
    """
    tokens = structlog.contextvars.bind_contextvars(
        event_id=str(event_id), correlation_id=str(correlation_id)
    )
    return EventContext(tokens)
