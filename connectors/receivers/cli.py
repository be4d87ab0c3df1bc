"""``hub receivers``: the local receivers (Kela, funds, providers, municipal systems) for demos."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import uvicorn

from connectors.receivers.app import ReceiversState, create_app
from hub.logging import configure_logging, get_logger
from hub.settings import get_settings

log = get_logger(__name__)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@click.command("receivers")
@click.option("--host", default=None, help="Address to listen on.  [default: HUB_RECEIVERS_HOST]")
@click.option(
    "--port", default=None, type=int, help="Port to listen on.  [default: HUB_RECEIVERS_PORT]"
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="NDJSON file: every applied event is appended; read back on start (dedupe survives).",
)
def receivers_command(host: str | None, port: int | None, record: Path | None) -> None:
    """Run local receivers: /kela, /fund/CODE, /provider/BUSINESS_ID, /municipal/AREA.

    They verify Standard Webhooks signatures (the development secrets the hub signs with, or the
    routes' configured ones), drop duplicates by their signed webhook-id and record what they
    applied.
    POST /_control (fail_share, refuse_event_ids, delay_s, down), GET /_applied, GET /_stats.
    A summary per receiver is printed on stop (Ctrl-C or SIGTERM).
    """
    settings = get_settings()
    configure_logging(settings)
    state = ReceiversState(record_file=record)
    state.load()
    host = host or settings.receivers_host
    port = port or settings.receivers_port
    log.info("receivers.starting", url=f"http://{host}:{port}", record=str(record or ""))
    config = uvicorn.Config(
        create_app(settings, state),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    _Server(config).run()
    click.echo(summary_table(state.stats()))


class _Server(uvicorn.Server):
    """uvicorn's server, but a stop signal only stops it: uvicorn raises the signal again after
    shutting down (so the process would die of it), and the summary would never be printed."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def summary_table(stats: dict[str, Any]) -> str:
    """Applied, duplicates, refused, failed, unauthorized, conflicts per receiver, and the total."""
    receivers = stats["receivers"]
    total = stats["total"]
    columns = ("applied", "duplicates", "refused", "failed", "unauthorized", "conflicts")
    rows = [(name, *(str(counts.get(c, 0)) for c in columns)) for name, counts in receivers.items()]
    rows.append(("total", *(str(total.get(c, 0)) for c in columns)))
    header = ("receiver", *columns)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)
