"""Correction integrity in the reporting store: a version joins a fact only when it names an
event of the same table, the same person (and, for payers' facts, the same payer); refused
versions never count, are listed in ``rejected_versions``, and an unknown target resolves when it
arrives. ``live_sql`` is a filter over ``superseded_at`` that gives what the window gave."""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.events.customer_path import (
    BenefitDaysAccrued,
    InitialInterviewHeld,
    JobseekerRegistered,
)
from hub.reporting.store import ReportingStore, StoreBusyError, StoreLayoutError
from hub.reporting.tables import FACT_TABLES, live_sql, live_window_sql
from tests.conftest import duckdb_file_held_by_another_process

T0 = datetime(2026, 1, 10, 8, 0)
AS_OF_NOW = "TIMESTAMP '9999-12-31 23:59:59'"


def _of(paths: list[list[Any]], kind: type, n: int) -> list[dict[str, Any]]:
    """The raw records of the first event of ``kind`` of ``n`` different people."""
    found: list[dict[str, Any]] = []
    for path in paths:
        event: Any = next((e for e in path if isinstance(e, kind)), None)
        if event is not None:
            found.append(copy.deepcopy(event.to_avro()))
        if len(found) == n:
            return found
    raise AssertionError(f"fewer than {n} people with {kind.__name__}")


def _version(
    raw: dict[str, Any], corrects: Any, hours: float = 1, *, retracted: bool = False
) -> dict[str, Any]:
    new = copy.deepcopy(raw)
    new["envelope"]["event_id"] = uuid.uuid4()
    new["envelope"]["corrects_event_id"] = uuid.UUID(str(corrects)) if corrects else None
    new["envelope"]["retracted"] = retracted
    new["envelope"]["recorded_at"] = raw["envelope"]["recorded_at"] + timedelta(hours=hours)
    return new


def _id(raw: dict[str, Any]) -> str:
    return str(raw["envelope"]["event_id"])


def _live(store: ReportingStore, table: str) -> set[tuple[str, str]]:
    rows = store.con.execute(f"SELECT event_id, fact_id FROM ({live_sql(table, AS_OF_NOW)})")
    return set(rows.fetchall())


def _rejected(store: ReportingStore) -> set[tuple[str, str, str, str]]:
    rows = store.con.execute(
        "SELECT event_id, table_name, corrects_event_id, reason FROM rejected_versions"
    )
    return set(rows.fetchall())


def test_a_retraction_of_another_persons_fact_is_refused(simulated_paths: list[list[Any]]) -> None:
    tampere, helsinki = _of(simulated_paths, JobseekerRegistered, 2)
    assert tampere["envelope"]["subject"] != helsinki["envelope"]["subject"]
    attack = _version(helsinki, _id(tampere), retracted=True)  # Helsinki's record, Tampere's id
    store = ReportingStore(":memory:")
    store.load_records([("JobseekerRegistered", tampere), ("JobseekerRegistered", attack)])
    assert _live(store, "spells") == {(_id(tampere), _id(tampere))}
    assert _rejected(store) == {(_id(attack), "spells", _id(tampere), "other_subject")}
    assert store.rejected() == {"other_subject": 1}
    # in the other load order, and loaded again: the same, nothing added
    again = ReportingStore(":memory:")
    again.load_records([("JobseekerRegistered", attack)])
    again.load_records([("JobseekerRegistered", tampere)])
    assert _live(again, "spells") == {(_id(tampere), _id(tampere))}
    assert _rejected(again) == _rejected(store)
    assert again.load_records([("JobseekerRegistered", attack)]) == 0
    # a correction of the refused version is refused for the same reason
    follow = _version(helsinki, _id(attack), 2)
    again.load_records([("JobseekerRegistered", follow)])
    assert (_id(follow), "spells", _id(attack), "other_subject") in _rejected(again)
    assert _live(again, "spells") == {(_id(tampere), _id(tampere))}


def test_a_correction_naming_another_type_is_refused(simulated_paths: list[list[Any]]) -> None:
    (registration,) = _of(simulated_paths, JobseekerRegistered, 1)
    (interview,) = _of(simulated_paths, InitialInterviewHeld, 1)
    interview["envelope"]["subject"] = registration["envelope"]["subject"]
    wrong = _version(interview, _id(registration), retracted=True)
    store = ReportingStore(":memory:")
    store.load_records(
        [
            ("JobseekerRegistered", registration),
            ("InitialInterviewHeld", interview),
            ("InitialInterviewHeld", wrong),
        ]
    )
    assert _live(store, "spells") == {(_id(registration), _id(registration))}
    assert _live(store, "interviews") == {(_id(interview), _id(interview))}
    assert _rejected(store) == {(_id(wrong), "interviews", _id(registration), "other_type")}


def test_kela_cannot_retract_a_funds_accrual(simulated_paths: list[list[Any]]) -> None:
    accruals = [
        copy.deepcopy(e.to_avro())
        for path in simulated_paths
        for e in path
        if isinstance(e, BenefitDaysAccrued) and e.payload.payer.fund_code is not None
    ]
    fund = accruals[0]
    kela = _version(fund, _id(fund), retracted=True)
    kela["payload"]["payer"] = {"kind": "KELA", "fund_code": None}
    same_fund = _version(fund, _id(fund), 2)  # the fund's own correction joins
    store = ReportingStore(":memory:")
    store.load_records([("BenefitDaysAccrued", r) for r in (fund, kela, same_fund)])
    assert _live(store, "accruals") == {(_id(same_fund), _id(fund))}
    assert _rejected(store) == {(_id(kela), "accruals", _id(fund), "other_payer")}


def test_a_correction_cycle_counts_nowhere(simulated_paths: list[list[Any]]) -> None:
    (raw,) = _of(simulated_paths, JobseekerRegistered, 1)
    a = _version(raw, None)
    b = _version(raw, _id(a), 2)
    a["envelope"]["corrects_event_id"] = uuid.UUID(_id(b))  # A corrects B, B corrects A
    c = _version(raw, _id(a), 3)  # a chain into the cycle
    store = ReportingStore(":memory:")
    store.load_records([("JobseekerRegistered", r) for r in (a, b, c)])
    assert _live(store, "spells") == set()
    assert _rejected(store) == {
        (_id(a), "spells", _id(b), "cycle"),
        (_id(b), "spells", _id(a), "cycle"),
        (_id(c), "spells", _id(a), "cycle"),
    }


def test_an_unknown_target_waits_and_resolves_when_it_arrives(
    simulated_paths: list[list[Any]],
) -> None:
    (first,) = _of(simulated_paths, JobseekerRegistered, 1)
    second = _version(first, _id(first), 1)
    third = _version(first, _id(second), 2, retracted=True)
    store = ReportingStore(":memory:")
    store.load_records([("JobseekerRegistered", third)])
    store.load_records([("JobseekerRegistered", second)])
    assert _live(store, "spells") == set()  # neither counts while the first is unknown
    assert store.rejected() == {"unknown_target": 2}
    store.load_records([("JobseekerRegistered", first)])
    assert store.rejected() == {}
    rows = store.con.execute(
        "SELECT event_id, fact_id, superseded_at FROM spells ORDER BY recorded_at"
    ).fetchall()
    t0 = first["envelope"]["recorded_at"].replace(tzinfo=None)
    assert rows == [
        (_id(first), _id(first), t0 + timedelta(hours=1)),
        (_id(second), _id(first), t0 + timedelta(hours=2)),
        (_id(third), _id(first), None),
    ]
    assert _live(store, "spells") == set()  # the retraction wins now
    as_of = f"TIMESTAMP '{t0 + timedelta(minutes=90)}'"
    live = store.con.execute(f"SELECT event_id FROM ({live_sql('spells', as_of)})").fetchall()
    assert live == [(_id(second),)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # which fact
            st.integers(0, 4),  # recorded_at hour: few values, so ties are common
            st.booleans(),  # retracted
        ),
        min_size=1,
        max_size=14,
    ),
    st.randoms(use_true_random=False),
)
def test_the_filter_gives_what_the_window_gave(
    simulated_paths: list[list[Any]], versions: list[tuple[int, int, bool]], rnd: Any
) -> None:
    """Random versions (ties included), loaded in random batches: at every as-of time the
    filter over ``superseded_at`` and the window over all versions pick the same rows."""
    (base_record,) = _of(simulated_paths, JobseekerRegistered, 1)
    con_rows: list[tuple[str, int, int, bool]] = []
    roots: dict[int, str] = {}
    for index, (fact, hour, retracted) in enumerate(versions):
        # unique, in random order: random high bits, the index low
        event_id = str(uuid.UUID(int=(rnd.getrandbits(64) << 64) | index))
        root = roots.get(fact)
        if root is None:
            roots[fact] = event_id
            retracted = False
        con_rows.append((event_id, fact, hour, retracted))
    rnd.shuffle(con_rows)
    store = ReportingStore(":memory:")
    subject = {f: str(uuid.UUID(int=f + 1)) for f in roots}
    cut = rnd.randint(0, len(con_rows))
    for part in (con_rows[:cut], con_rows[cut:]):
        if not part:
            continue
        records = []
        for event_id, fact, hour, retracted in part:
            record = copy.deepcopy(base_record)
            record["envelope"]["event_id"] = uuid.UUID(event_id)
            corrects = None if roots[fact] == event_id else uuid.UUID(roots[fact])
            record["envelope"]["corrects_event_id"] = corrects
            record["envelope"]["retracted"] = retracted
            record["envelope"]["subject"] = subject[fact]
            record["envelope"]["recorded_at"] = base_record["envelope"]["recorded_at"] + timedelta(
                hours=hour
            )
            records.append(("JobseekerRegistered", record))
        store.load_records(records)
    assert store.rejected() == {}
    base = base_record["envelope"]["recorded_at"].replace(tzinfo=None)
    for minutes in range(-30, 5 * 60 + 30, 30):
        as_of = f"TIMESTAMP '{base + timedelta(minutes=minutes)}'"
        by_filter = store.con.execute(live_sql("spells", as_of) + " ORDER BY event_id").fetchall()
        by_window = store.con.execute(
            live_window_sql("spells", as_of) + " ORDER BY event_id"
        ).fetchall()
        assert by_filter == by_window, (minutes, con_rows, cut)
    store.close()


def test_a_store_of_another_layout_or_no_duckdb_file_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.duckdb"
    con = duckdb.connect(str(old))
    con.execute("CREATE TABLE spells (event_id VARCHAR)")  # layout 1 had no store_meta
    con.close()
    newer = tmp_path / "newer.duckdb"
    ReportingStore(newer).close()
    con = duckdb.connect(str(newer))
    con.execute("UPDATE store_meta SET value = '99' WHERE key = 'layout'")
    con.close()
    empty = tmp_path / "zero.duckdb"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.duckdb"
    garbage.write_bytes(b"not a database " * 400)
    for path in (old, newer, empty, garbage):
        with pytest.raises(StoreLayoutError) as caught:
            ReportingStore(path)
        assert str(caught.value).startswith("rebuild the store: "), path
        assert "\n" not in str(caught.value)
    with ReportingStore(newer.with_name("fresh.duckdb")) as store:
        row = store.con.execute("SELECT value FROM store_meta WHERE key = 'layout'").fetchone()
        assert row == ("2",)
        assert {t.name for t in FACT_TABLES} <= {
            r[0] for r in store.con.execute("SHOW TABLES").fetchall()
        }


def test_a_store_locked_by_another_process_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "locked.duckdb"
    ReportingStore(path).close()
    with (
        duckdb_file_held_by_another_process(path),
        pytest.raises(StoreBusyError) as caught,
    ):
        ReportingStore(path)
    assert "in use by another process" in str(caught.value)
    assert "\n" not in str(caught.value)
