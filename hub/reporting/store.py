"""The reporting store: one DuckDB file (or ``:memory:``) of fact tables, filled through Arrow.

Rows arrive in batches (:class:`hub.reporting.facts.FactBatch`), each fact table's batch one
Arrow table, inserted with one ``INSERT … SELECT`` that skips event ids the table already holds
and repeats inside the batch: loading is idempotent by event id, so a replay into an existing
store, or a log holding a fact twice (the simulator run twice), counts each event once. Never a
row-by-row insert.

After each load the corrections are resolved in SQL, and the log being the truth, the consumer
side enforces what a correction may name: a version joins a fact only when its
``corrects_event_id`` chain leads, hop by hop, through events of the **same table** (event type)
and the **same person** (pseudonym; for payers' facts, statements, requests and accruals, also
the same payer: Kela cannot correct a fund's accrual) to an original version, whose event id is
the fact id (a correction may name a later version, loaded before or after it). Any other
version is refused and never counts: it is kept in ``<table>_rejected`` (out of the fact
tables, so every query of them, :func:`hub.reporting.tables.live_sql` or not, leaves it out)
and listed in the view ``rejected_versions`` with the reason ``other_subject``, ``other_payer``,
``other_type``, ``cycle`` (the chain loops, or is longer than 64 hops) or ``unknown_target``
(the chain leads to an event the store does not hold: it does not count until its target
arrives; it walks again on every load, and joins its fact when a later load brings the target).
The result does not depend on load order.

Per version the store then keeps when the next version of its fact was recorded
(``superseded_at``, ``superseded_by``: the next in the order ``recorded_at``, ``event_id``), set
in SQL for the facts that gained a version, so the facts as of a time are a plain filter.

The store records its layout (``store_meta``); a file of another layout, or one that is not a
DuckDB file, is refused with one line (:class:`StoreLayoutError`: rebuild the store), a file
another process holds with :class:`StoreBusyError`.
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
from hub.reporting.tables import FACT_TABLES, STORE_COLUMNS, TABLES, FactTable
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
"""Hops a correction chain may take to its first version; a longer chain counts as a cycle."""
LAYOUT_VERSION = 2
"""The store's table layout, kept in ``store_meta``: 2 added ``corrects_event_id``,
``superseded_at``, ``superseded_by``, the ``<table>_rejected`` tables and
``rejected_versions``. A file of another layout is refused (rebuild it with hub replay)."""


def table_sql(table: FactTable, *, rejected: bool = False) -> str:
    """``CREATE TABLE`` of a fact table (or of its ``<name>_rejected`` table, the same
    columns and the reason), without an index on the event id.

    Uniqueness by event id is the load's own rule (the anti-join and the in-batch dedupe of
    :meth:`ReportingStore._insert`, inside the batch's transaction; DuckDB lets one process
    write a file). A PRIMARY KEY would check it a second time with an ART index that made
    inserting six times slower (``bench/replay.py``) and that DuckDB holds in memory: at a
    national year's 25 M events, gigabytes.
    """
    columns = [f"{c.name} {c.sql_type}" for c in table.all_columns + STORE_COLUMNS]
    if rejected:
        columns.append("rejected_reason VARCHAR")
    name = rejected_table(table) if rejected else table.name
    return f"CREATE TABLE IF NOT EXISTS {name} (\n  " + ",\n  ".join(columns) + "\n)"


def _payer_sql(table: FactTable) -> str:
    """Who pays, for the tables of payers' facts (statements, requests, accruals): a
    correction must name a fact of the same payer; NULL elsewhere."""
    names = {column.name for column in table.columns}
    if "payer_kind" in names:
        return "coalesce(t.payer_kind, '') || '/' || coalesce(t.fund_code, '')"
    return "NULL::VARCHAR"


def rejected_table(table: FactTable) -> str:
    """Where the store keeps the versions of ``table`` it refused (see the module text)."""
    return f"{table.name}_rejected"


def rejected_view_sql() -> str:
    """``rejected_versions``: every refused version, its table, what it named and why."""
    return "CREATE OR REPLACE VIEW rejected_versions AS " + " UNION ALL ".join(
        f"SELECT event_id, '{t.name}' AS table_name, corrects_event_id, "
        f"rejected_reason AS reason, subject, "
        f"recorded_at FROM {rejected_table(t)}"
        for t in FACT_TABLES
    )


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


class StoreError(Exception):
    """The store file cannot be used; the message is one line for the operator."""


class StoreLayoutError(StoreError):
    """A file of another layout, or not a DuckDB file at all: rebuild the store."""


class StoreBusyError(StoreError):
    """Another process holds the file (DuckDB lets one process write it)."""


def _connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(path, read_only=read_only)
    except duckdb.Error as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "lock" in text.lower():
            raise StoreBusyError(
                f"the reporting store {path} is in use by another process (a replay or a "
                "report?); try again when it has finished"
            ) from None
        if "not a valid DuckDB database" in text or "database file" in text.lower():
            raise StoreLayoutError(
                f"rebuild the store: {path} is not a DuckDB database file "
                f"(delete it and run hub replay)"
            ) from None
        raise StoreError(f"the reporting store {path} cannot be opened: {text}") from None


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
        if self.path != ":memory:" and not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.con: duckdb.DuckDBPyConnection = _connect(self.path, read_only)
        self.read_only = read_only
        self._routes = routes
        self._settings = settings
        self._destination = destination
        self._projection: ReportingProjection | None = None
        try:
            self._check_layout()
        except BaseException:
            self.con.close()
            raise

    def _check_layout(self) -> None:
        """Refuse a file of another layout (one line: rebuild the store); make a new one."""
        tables = {
            row[0]
            for row in self.con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        }
        if "store_meta" in tables:
            row = self.con.execute("SELECT value FROM store_meta WHERE key = 'layout'").fetchone()
            found = row[0] if row else "unknown"
            if found != str(LAYOUT_VERSION):
                raise StoreLayoutError(
                    f"rebuild the store: {self.path} has store layout {found}, this hub reads "
                    f"layout {LAYOUT_VERSION} (delete it and run hub replay)"
                )
            return
        if tables:
            raise StoreLayoutError(
                f"rebuild the store: {self.path} is a reporting store of an earlier layout "
                f"(no store_meta; this hub reads layout {LAYOUT_VERSION}): delete it and run "
                "hub replay"
            )
        if self.read_only:
            return
        self.con.execute("BEGIN TRANSACTION")
        for table in FACT_TABLES:
            self.con.execute(table_sql(table))
            self.con.execute(table_sql(table, rejected=True))
        self.con.execute(rejected_view_sql())
        self.con.execute("CREATE TABLE store_meta (key VARCHAR, value VARCHAR)")
        self.con.execute("INSERT INTO store_meta VALUES ('layout', ?)", [str(LAYOUT_VERSION)])
        self.con.execute("COMMIT")

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
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE _pending (event_id VARCHAR, tbl VARCHAR)"
            )
            for table, arrow in batch.tables():
                added += self._insert(table, arrow)
            self._resolve()
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
        new = (
            f"NOT EXISTS (SELECT 1 FROM {table.name} AS t WHERE t.event_id = b.event_id) "
            f"AND NOT EXISTS (SELECT 1 FROM {rejected_table(table)} AS r "
            f"WHERE r.event_id = b.event_id)"
        )
        self.con.register(view, arrow)
        try:
            # The corrections among the new rows (few), to resolve after the inserts; a batch
            # without any (most of a replay) skips the statement.
            corrections = arrow.column("fact_id")
            if corrections.null_count < len(corrections):
                self.con.execute(
                    f"INSERT INTO _pending SELECT DISTINCT event_id, '{table.name}' "
                    f"FROM {view} AS b WHERE b.fact_id IS NOT NULL AND {new}"
                )
            result = self.con.execute(
                f"INSERT INTO {table.name} ({', '.join(names)}, corrects_event_id) "
                f"SELECT {selected}, fact_id FROM {view} AS b WHERE {new} "
                f"QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY _seq) = 1"
            ).fetchone()
        finally:
            self.con.unregister(view)
        return int(result[0]) if result else 0

    def _resolve(self) -> None:
        """Resolve the new corrections and the ones waiting for their target (module text).

        A walk along each pending version's chain, one hop a round, in a temporary table:
        every hop must land on an event of the same table and the same person; the walk ends
        at an original version (the fact id) or with the reason the version is refused. The
        refused ones move to ``<table>_rejected``; those refused for an unknown target come
        back and walk again on every later load. Then ``superseded_at`` is set over the facts
        that gained a version.
        """
        con = self.con
        waiting = con.execute(
            "SELECT DISTINCT table_name FROM rejected_versions WHERE reason = 'unknown_target'"
        ).fetchall()
        for (name,) in waiting:  # the versions still waiting for their target walk again
            table = TABLES[name]
            held = rejected_table(table)
            con.execute(
                f"INSERT INTO _pending SELECT event_id, '{table.name}' FROM {held} "
                "WHERE rejected_reason = 'unknown_target'"
            )
            con.execute(
                f"INSERT INTO {table.name} SELECT * EXCLUDE (rejected_reason) FROM {held} "
                "WHERE rejected_reason = 'unknown_target'"
            )
            con.execute(f"DELETE FROM {held} WHERE rejected_reason = 'unknown_target'")
        pending = con.execute("SELECT tbl, count(*) FROM _pending GROUP BY tbl").fetchall()
        if not pending:
            return
        touched = [TABLES[name] for name, _ in pending]
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _walk (event_id VARCHAR, tbl VARCHAR, "
            "subject VARCHAR, payer VARCHAR, target VARCHAR, fact_id VARCHAR, reason VARCHAR)"
        )
        for table in touched:
            con.execute(
                f"INSERT INTO _walk SELECT t.event_id, '{table.name}', t.subject, "
                f"{_payer_sql(table)}, t.corrects_event_id, NULL, NULL FROM {table.name} AS t "
                f"SEMI JOIN _pending AS p ON p.event_id = t.event_id AND p.tbl = '{table.name}'"
            )
        hits = " UNION ALL ".join(
            f"SELECT event_id, '{t.name}' AS tbl, subject, {_payer_sql(t)} AS payer, "
            f"corrects_event_id, NULL::VARCHAR AS reason FROM {t.name} AS t "
            f"WHERE event_id IN (SELECT target FROM _open) "
            f"UNION ALL SELECT event_id, '{t.name}', subject, {_payer_sql(t)}, corrects_event_id, "
            f"rejected_reason FROM {rejected_table(t)} AS t "
            f"WHERE event_id IN (SELECT target FROM _open)"
            for t in FACT_TABLES
        )
        for _ in range(_MAX_CHAIN):
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _open AS SELECT DISTINCT target FROM _walk "
                "WHERE fact_id IS NULL AND reason IS NULL"
            )
            row = con.execute("SELECT count(*) FROM _open").fetchone()
            if not row or not row[0]:
                break
            con.execute(f"CREATE OR REPLACE TEMP TABLE _hit AS {hits}")
            con.execute(
                """
                CREATE OR REPLACE TEMP TABLE _walk_next AS
                WITH step AS (
                    SELECT w.*, h.event_id AS h_id, h.tbl AS h_tbl, h.subject AS h_subject,
                           h.payer AS h_payer,
                           h.corrects_event_id AS h_next, h.reason AS h_reason
                    FROM _walk AS w LEFT JOIN _hit AS h ON h.event_id = w.target
                    WHERE w.fact_id IS NULL AND w.reason IS NULL
                    QUALIFY row_number() OVER (
                        PARTITION BY w.event_id, w.tbl ORDER BY (h.tbl = w.tbl) DESC) = 1
                ), judged AS (
                    SELECT *, CASE
                        WHEN h_id IS NULL THEN 'unknown_target'
                        WHEN h_tbl <> tbl THEN 'other_type'
                        WHEN h_subject IS DISTINCT FROM subject THEN 'other_subject'
                        WHEN h_payer IS DISTINCT FROM payer THEN 'other_payer'
                        WHEN h_reason IS NOT NULL THEN h_reason
                        WHEN h_next = event_id THEN 'cycle'
                    END AS verdict FROM step
                )
                SELECT event_id, tbl, subject, payer,
                       CASE WHEN verdict IS NULL THEN h_next ELSE target END AS target,
                       CASE WHEN verdict IS NULL AND h_next IS NULL THEN h_id END AS fact_id,
                       verdict AS reason
                FROM judged
                UNION ALL
                SELECT * FROM _walk WHERE fact_id IS NOT NULL OR reason IS NOT NULL
                """
            )
            con.execute("DROP TABLE _walk")
            con.execute("ALTER TABLE _walk_next RENAME TO _walk")
        # A chain still open after the rounds loops (or is longer than _MAX_CHAIN).
        con.execute("UPDATE _walk SET reason = 'cycle' WHERE fact_id IS NULL AND reason IS NULL")
        outcome = {
            tbl: (int(resolved), int(refused))
            for tbl, resolved, refused in con.execute(
                "SELECT tbl, count(fact_id), count(reason) FROM _walk GROUP BY tbl"
            ).fetchall()
        }
        for table in touched:
            name, held = table.name, rejected_table(table)
            resolved, refused = outcome.get(name, (0, 0))
            if refused:
                self._refuse(name, held)
            if resolved:
                self._supersede(name)

    def _refuse(self, name: str, held: str) -> None:
        """Move the refused versions of table ``name`` to ``held`` with their reason."""
        self.con.execute(
            f"INSERT INTO {held} SELECT t.*, w.reason FROM {name} AS t JOIN _walk AS w "
            f"ON w.event_id = t.event_id AND w.tbl = '{name}' WHERE w.reason IS NOT NULL"
        )
        self.con.execute(
            f"DELETE FROM {name} WHERE event_id IN "
            f"(SELECT event_id FROM _walk WHERE tbl = '{name}' AND reason IS NOT NULL)"
        )

    def _supersede(self, name: str) -> None:
        """Point the resolved versions of table ``name`` at their fact, then set every version
        of those facts' ``superseded_at`` / ``superseded_by`` (the next by recorded_at, event
        id; NULL for the latest)."""
        self.con.execute(
            f"UPDATE {name} AS t SET fact_id = w.fact_id FROM _walk AS w "
            f"WHERE w.tbl = '{name}' AND w.fact_id IS NOT NULL AND t.event_id = w.event_id"
        )
        self.con.execute(
            f"""
            UPDATE {name} AS t SET superseded_at = n.next_at, superseded_by = n.next_id
            FROM (
                SELECT event_id,
                       lead(recorded_at) OVER v AS next_at, lead(event_id) OVER v AS next_id
                FROM {name}
                WHERE fact_id IN (
                    SELECT fact_id FROM _walk WHERE tbl = '{name}' AND fact_id IS NOT NULL)
                WINDOW v AS (PARTITION BY fact_id ORDER BY recorded_at, event_id)
            ) AS n
            WHERE t.event_id = n.event_id AND (
                t.superseded_at IS DISTINCT FROM n.next_at
                OR t.superseded_by IS DISTINCT FROM n.next_id)
            """
        )

    # -- reading ----------------------------------------------------------------------------

    def rejected(self) -> dict[str, int]:
        """Refused versions by reason (``rejected_versions``), none counted in any figure."""
        rows = self.con.execute(
            "SELECT reason, count(*) FROM rejected_versions GROUP BY reason ORDER BY reason"
        ).fetchall()
        return {str(reason): int(n) for reason, n in rows}

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


__all__ = [
    "BATCH_ROWS",
    "LAYOUT_VERSION",
    "ReportingStore",
    "StoreBusyError",
    "StoreError",
    "StoreLayoutError",
    "paused_gc",
    "rejected_table",
    "table_sql",
]
