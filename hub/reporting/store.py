"""The reporting store: one DuckDB file (or ``:memory:``) of fact tables, filled through Arrow.

Rows arrive in batches (:class:`hub.reporting.facts.FactBatch`), each fact table's batch one
Arrow table, inserted with one ``INSERT … SELECT`` that skips event ids the table already holds
and repeats inside the batch: loading is idempotent by event id, so a replay into an existing
store, or a log holding a fact twice (the simulator run twice), counts each event once. Never a
row-by-row insert.

After each load the fact ids are resolved in SQL: a version with ``corrects_event_id`` belongs
to the fact of the version it names, followed along the chain to its first version (a
correction may name a later version, loaded before or after it). A version whose chain leads to
an event the store does not hold (yet) keeps the furthest id known; the next load that brings
the missing version completes it, so the result does not depend on load order.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from hub.logging import get_logger
from hub.reporting.facts import REPORTING_DESTINATION, FactBatch, ReportingProjection
from hub.reporting.tables import FACT_TABLES, FactTable
from hub.routing.routes import RoutesConfig, load_routes
from hub.settings import HubSettings

if TYPE_CHECKING:
    import pyarrow as pa

    from hub.events.base import CustomerPathEvent

log = get_logger(__name__)

BATCH_ROWS = 100_000
"""Records per Arrow batch: large enough that DuckDB's per-statement cost vanishes, small
enough that a batch's rows stay well inside memory."""
_MAX_CHAIN = 64
"""Rounds of fact-id resolution; each round at least doubles the chain length resolved."""


def table_sql(table: FactTable) -> str:
    """``CREATE TABLE`` of a fact table, without an index on the event id.

    Uniqueness by event id is the load's own rule (the anti-join and the in-batch dedupe of
    :meth:`ReportingStore._insert`, inside the batch's transaction; DuckDB lets one process
    write a file). A PRIMARY KEY would check it a second time with an ART index that made
    inserting six times slower (``bench/replay.py``) and that DuckDB holds in memory: at a
    national year's 25 M events, gigabytes. A store file made with the key still loads.
    """
    columns = ",\n  ".join(f"{c.name} {c.sql_type}" for c in table.all_columns)
    return f"CREATE TABLE IF NOT EXISTS {table.name} (\n  {columns}\n)"


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a load runs (back on after, as it was).

    A load holds a batch of row tuples (100,000 records): every collection the allocations
    trigger walks all of them again, which measured costs more than the decoding (see
    ``bench/replay.py``); decoded records make no reference cycles, so nothing waits for it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class ReportingStore:
    """The fact tables of :mod:`hub.reporting.tables` in DuckDB, fed by the reporting route."""

    def __init__(
        self,
        path: Path | str,
        *,
        read_only: bool = False,
        routes: RoutesConfig | None = None,
        destination: str = REPORTING_DESTINATION,
        settings: HubSettings | None = None,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.con: duckdb.DuckDBPyConnection = duckdb.connect(self.path, read_only=read_only)
        self.read_only = read_only
        self._routes = routes
        self._settings = settings
        self._destination = destination
        self._projection: ReportingProjection | None = None
        if not read_only:
            for table in FACT_TABLES:
                self.con.execute(table_sql(table))

    @property
    def projection(self) -> ReportingProjection:
        """The reporting route's projection (routes of the settings, loaded when first used)."""
        if self._projection is None:
            routes = self._routes
            if routes is None:
                routes = load_routes(self._settings or HubSettings())
            self._projection = ReportingProjection(routes, self._destination)
        return self._projection

    # -- loading ----------------------------------------------------------------------------

    def load_records(self, records: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Load ``(short type name, decoded raw record)`` pairs; returns the rows added.

        Each record goes through the reporting route's projection first; a type the route
        does not carry, or an event its filters refuse, adds nothing.
        """
        projection = self.projection

        def projected() -> Iterator[tuple[str, dict[str, Any]]]:
            for type_name, record in records:
                short = type_name.rpartition(".")[2]
                if short not in projection.types:
                    continue
                if not projection.accepts(short, record["envelope"]):
                    continue
                yield short, projection.project(short, record)

        return self.load_projected(projected())

    def load_events(self, events: Iterable[CustomerPathEvent]) -> int:
        """Load event models (tests build scenarios this way), through the same projection."""
        return self.load_records((event.event_type, event.to_avro()) for event in events)

    def load_projected(self, records: Iterable[tuple[str, dict[str, Any]]]) -> int:
        """Load records already projected for the reporting destination (replay's fast path
        decodes into the derived schema); either record shape, logical or raw Avro values."""
        added = 0
        iterator = iter(records)
        with paused_gc():
            while True:
                chunk = list(islice(iterator, BATCH_ROWS))
                if not chunk:
                    break
                batch = FactBatch()
                for type_name, record in chunk:
                    batch.add(type_name, record)
                added += self.load_batch(batch)
        return added

    def load_batch(self, batch: FactBatch) -> int:
        """Insert one batch of rows (one transaction), then resolve fact ids; rows added."""
        if not len(batch):
            return 0
        added = 0
        self.con.execute("BEGIN TRANSACTION")
        try:
            touched: list[FactTable] = []
            for table, arrow in batch.tables():
                added += self._insert(table, arrow)
                touched.append(table)
            for table in touched:
                self._resolve_fact_ids(table)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return added

    def _insert(self, table: FactTable, arrow: pa.Table) -> int:
        names = [column.name for column in table.all_columns]
        selected = ", ".join(
            "coalesce(fact_id, event_id)"
            if name == "fact_id"
            else "coalesce(retracted, false)"
            if name == "retracted"
            else name
            for name in names
        )
        view = f"_incoming_{table.name}"
        self.con.register(view, arrow)
        try:
            result = self.con.execute(
                f"INSERT INTO {table.name} ({', '.join(names)}) "
                f"SELECT {selected} FROM {view} AS b "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table.name} AS t WHERE t.event_id = b.event_id) "
                f"QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY _seq) = 1"
            ).fetchone()
        finally:
            self.con.unregister(view)
        return int(result[0]) if result else 0

    def _resolve_fact_ids(self, table: FactTable) -> None:
        """Point every correction at the first version of its chain (see the module text)."""
        for _ in range(_MAX_CHAIN):
            result = self.con.execute(
                f"UPDATE {table.name} AS t SET fact_id = p.fact_id "
                f"FROM (SELECT event_id, fact_id FROM {table.name} "
                f"WHERE fact_id <> event_id) AS p "
                f"WHERE t.fact_id = p.event_id AND t.fact_id <> t.event_id "
                f"AND p.fact_id <> t.fact_id"
            ).fetchone()
            if not result or not result[0]:
                return
        log.warning("fact id chain not resolved", table=table.name, rounds=_MAX_CHAIN)

    # -- reading ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows per fact table."""
        counts: dict[str, int] = {}
        for table in FACT_TABLES:
            row = self.con.execute(f"SELECT count(*) FROM {table.name}").fetchone()
            counts[table.name] = int(row[0]) if row else 0
        return counts

    def export(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows sorted by event id (compare two stores with it)."""
        return {
            table.name: self.con.execute(f"SELECT * FROM {table.name} ORDER BY event_id").fetchall()
            for table in FACT_TABLES
        }

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> ReportingStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["BATCH_ROWS", "ReportingStore", "paused_gc", "table_sql"]
