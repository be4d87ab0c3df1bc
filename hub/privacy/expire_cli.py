"""``hub person expire``: forget the people whose personal data has outlived the retention rule.

From the reporting store (pseudonyms, their job-search spells and their other facts, as known
now) every person whose customer relationship ended longer ago than the rule in force on
``--as-of`` says (:mod:`hub.rules.retention`, ``hub/rules/data/personal_data_retention.csv``)
is forgotten by pseudonym: the person-keys topic gets the forgotten marker and a tombstone per
key (:meth:`KafkaPersonKeys.forget`), and the disclosure log an ``erased`` receipt naming the
rule (:func:`record_erasures`). From then on their sealed personal fields are unreadable
everywhere and routes that need them dead-letter; their pseudonymous facts stay in the reports.

Every person with a fact in any table of the store is checked, not only those with a spell
(someone who only enrolled in a service or had a statement issued has a relationship too). The
relationship has ended when no spell is open, and it ended on the later of the last spell's
end (``ended_on``) and the day of the person's last other fact. That day is the fact's event
time (``occurred_at``, as a day in Finland): when the person dealt with the services. Not its
knowledge time (``recorded_at``): a fact recorded late (a backfill, an archive replayed into a
new store, a correction of an old fact) must not restart the clock of a relationship that ended
long before; ``recorded_at`` only says which facts are known (the store as known now, each
fact's latest version, retracted facts left out).

:meth:`KafkaPersonKeys.forget` has no batch form (one person's marker and tombstones,
acknowledged, at a time); the erasure receipts are written in batches of
:data:`RECORD_BATCH`, and each batch says how many were forgotten so far.

The command never holds the key-encryption key: forgetting writes records and unwraps nothing
(the key store is given a keeper that refuses every unwrap). It never sees an identity code:
the store holds pseudonyms only, and it prints counts, never pseudonyms, except the few it
could forget but not record (so that ``hub person forget --pseudonym`` can record them).

A rule whose figure is not verified against the statute (``verified=no``) is applied only
with ``--accept-unverified-rule``; ``--dry-run`` counts without forgetting anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from hub.kafka.cli_support import run_kafka_command
from hub.logging import configure_logging
from hub.reporting.indicators.frame import FINLAND
from hub.reporting.store import ReportingStore, StoreError
from hub.reporting.tables import FACT_TABLES, live_sql
from hub.rules.effective import NoRuleInForce, Period
from hub.rules.retention import RetentionRule, Spell, is_expired, retention_rule
from hub.settings import HubSettings, get_settings

if TYPE_CHECKING:
    from hub.privacy.keystore import ForgetResult, KafkaPersonKeys

SPELL_TABLES: Final = ("spells", "spell_ends")
"""The tables of the spells themselves; every other fact table holds the person's other facts."""
RECORD_BATCH: Final = 100
"""Forgotten persons whose erasure receipts are written in one transaction."""
PROGRESS_EVERY: Final = 10_000


@dataclass
class Summary:
    checked: int = 0
    expired: int = 0
    """Whose data has outlived the rule and who were (or, dry, would be) forgotten now."""
    already_forgotten: int = 0
    open_spell: int = 0
    within_period: int = 0
    without_keys: int = 0
    """Expired people with no data key stored (records of before field encryption only)."""
    left_for_later: int = 0
    """Expired people beyond ``--limit``."""
    forgotten: int = 0
    """Forgotten by this run (their erasure recorded or not)."""
    unrecorded: list[str] = field(default_factory=list)


def persons_with_spells(
    store: ReportingStore, known_at: datetime
) -> Iterator[tuple[str, list[Spell], date | None]]:
    """``(pseudonym, spells, day of the last other fact)`` of every person with any fact in the
    store, as known at ``known_at`` (corrections and retractions applied), in pseudonym order.

    An end without its registration in the store counts as a spell of that one day. The last
    other fact is the latest ``occurred_at`` (a day in Finland) of the person's facts in the
    tables other than the spells' (:data:`SPELL_TABLES`); None when there is none.
    """
    others = " UNION ALL ".join(
        f"SELECT subject, occurred_at FROM ({live_sql(t.name)})"
        for t in FACT_TABLES
        if t.name not in SPELL_TABLES
    )
    query = f"""
        WITH s AS ({live_sql("spells")}), e AS (
            SELECT subject, correlation_id, max(ended_on) AS ended_on
            FROM ({live_sql("spell_ends")}) GROUP BY subject, correlation_id
        )
        SELECT coalesce(s.subject, e.subject) AS subject,
               coalesce(s.job_search_started_on, e.ended_on) AS started_on,
               e.ended_on AS ended_on, CAST(NULL AS TIMESTAMP) AS last_at
        FROM s FULL OUTER JOIN e
          ON s.subject = e.subject AND s.correlation_id = e.correlation_id
        UNION ALL
        SELECT subject, CAST(NULL AS DATE), CAST(NULL AS DATE), max(occurred_at)
        FROM ({others}) GROUP BY subject
        ORDER BY 1
    """
    cursor = store.con.execute(query, {"as_of": known_at.replace(tzinfo=None)})
    current: str | None = None
    spells: list[Spell] = []
    last: date | None = None
    while rows := cursor.fetchmany(10_000):
        for subject, started_on, ended_on, last_at in rows:
            if subject != current:
                if current is not None:
                    yield current, spells, last
                current, spells, last = subject, [], None
            if last_at is not None:  # the store's times are UTC without a zone
                last = last_at.replace(tzinfo=UTC).astimezone(FINLAND).date()
            elif started_on is not None:
                spells.append(Spell(started_on, ended_on))
    if current is not None:
        yield current, spells, last


def _rule(as_of: date) -> Period[RetentionRule]:
    try:
        return retention_rule(as_of)
    except NoRuleInForce as error:
        raise click.ClickException(f"no retention rule in force on {as_of}: {error}") from None


def _already_forgotten(keys: KafkaPersonKeys, subject: str) -> bool:
    """Forgotten before, and no key made since (a key made after the mark is live again)."""
    return keys.forgotten(subject) is not None and keys.directory.newest(subject) is None


@click.command("expire")
@click.option(
    "--as-of",
    "as_of_text",
    default=None,
    help="The day of the check (YYYY-MM-DD; default: today in Finland): the rule in force "
    "then, and how long ago each relationship ended.",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="DuckDB file of the reporting store.  [default: HUB_REPORTING_STORE]",
)
@click.option("--dry-run", is_flag=True, help="Count who would be forgotten; forget nobody.")
@click.option("--limit", type=click.IntRange(1), default=None, help="Forget at most N people.")
@click.option(
    "--accept-unverified-rule",
    is_flag=True,
    help="Apply a rule whose period is not verified against the statute (verified=no).",
)
@click.option(
    "--keys-timeout", type=float, default=30.0, show_default=True,
    help="Seconds to wait for the person-keys topic.",
)  # fmt: skip
def expire_command(
    as_of_text: str | None,
    store_path: Path | None,
    dry_run: bool,
    limit: int | None,
    accept_unverified_rule: bool,
    keys_timeout: float,
) -> None:
    """Forget the people whose customer relationship ended longer ago than retention allows.

    Reads the reporting store (hub replay fills it); forgets by pseudonym, records each
    erasure in the disclosure log with the rule's id. Prints counts, never identity codes.
    """
    settings = get_settings()
    configure_logging(settings)
    try:
        as_of = date.fromisoformat(as_of_text) if as_of_text else datetime.now(FINLAND).date()
    except ValueError:
        raise click.BadParameter("a day as YYYY-MM-DD", param_hint="--as-of") from None
    today = datetime.now(FINLAND).date()
    if as_of > today and not dry_run:
        # Forgetting cannot be undone: a day to come would erase people retention still keeps.
        raise click.BadParameter(
            f"{as_of} is after today ({today} in Finland); a day to come is for --dry-run only",
            param_hint="--as-of",
        )
    period = _rule(as_of)
    rule = period.value
    until = period.valid_to.isoformat() if period.valid_to else ""
    click.echo(
        f"rule {rule.rule_id}: personal data kept {rule.years} years after the "
        f"{rule.counts_from.replace('_', ' ')} (in force {period.valid_from}–{until}"
        f"{'' if rule.verified else '; NOT VERIFIED against the statute'}), as of {as_of}"
    )
    if not rule.verified and not dry_run and not accept_unverified_rule:
        raise click.ClickException(
            f"rule {rule.rule_id} is not verified against the statute (see "
            "hub/rules/data/personal_data_retention.csv): forgetting is irreversible; confirm "
            "the period and set verified=yes, or pass --accept-unverified-rule"
        )
    path = store_path or settings.reporting_store
    if not Path(path).exists():
        raise click.ClickException(f"no reporting store at {path}: run hub replay first")
    try:
        store = ReportingStore(path, read_only=True)
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    from hub.privacy.keystore import PersonKeysUnavailable, open_person_keys_for

    summary = Summary()
    try:
        # Forgetting writes markers and tombstones only: no key-encryption key that unwraps.
        with (
            open_person_keys_for(settings, needs_unwrap=False, timeout_s=keys_timeout) as keys,
            store,
        ):
            people = persons_with_spells(store, datetime.now(UTC))
            _expire(settings, keys, people, as_of, rule, dry_run, limit, summary)
    except PersonKeysUnavailable as error:
        raise click.ClickException(str(error)) from None
    _print_summary(settings, summary, dry_run)
    if summary.unrecorded:
        raise click.ClickException(
            f"{len(summary.unrecorded)} person(s) forgotten but their erasure not recorded in "
            "the disclosure log; record each with hub person forget --pseudonym <p> "
            f"--record-only --basis retention-expired --reason '{rule.reason()}': "
            f"{' '.join(summary.unrecorded)}"
        )


def _expire(
    settings: HubSettings,
    keys: KafkaPersonKeys,
    people: Iterator[tuple[str, list[Spell], date | None]],
    as_of: date,
    rule: RetentionRule,
    dry_run: bool,
    limit: int | None,
    summary: Summary,
) -> None:
    pending: list[ForgetResult] = []
    forgotten_now = 0
    for subject, spells, last_fact in people:
        summary.checked += 1
        if summary.checked % PROGRESS_EVERY == 0:
            click.echo(f"checked {summary.checked} person(s), {summary.expired} expired", err=True)
        if not is_expired(spells, as_of, rule, last_fact):
            if any(s.ended_on is None for s in spells):
                summary.open_spell += 1
            else:
                summary.within_period += 1
            continue
        if _already_forgotten(keys, subject):
            summary.already_forgotten += 1
            continue
        if limit is not None and forgotten_now >= limit:
            summary.left_for_later += 1
            continue
        summary.expired += 1
        forgotten_now += 1
        if not keys.directory.stored(subject):
            summary.without_keys += 1
        if dry_run:
            continue
        pending.append(keys.forget(subject, reason=rule.reason()))  # no batch form: one by one
        summary.forgotten += 1
        if len(pending) >= RECORD_BATCH:
            _record(settings, pending, rule, summary)
    if pending:
        _record(settings, pending, rule, summary)


def _record(
    settings: HubSettings, results: list[ForgetResult], rule: RetentionRule, summary: Summary
) -> None:
    from hub.privacy.access_log import record_erasures
    from hub.privacy.person_cli import ERASURE_BASES  # person_cli registers this command

    try:
        run_kafka_command(
            settings,
            record_erasures(
                settings,
                results,
                rule.reason(),
                via=f"hub person expire: {rule.rule_id}",
                basis="retention-expired",
                basis_text=ERASURE_BASES["retention-expired"],
            ),
        )
        click.echo(
            f"forgot {len(results)} person(s), erasures recorded ({summary.forgotten} "
            "forgotten so far)",
            err=True,
        )
    except Exception as error:  # the keys are gone: say whose receipt is missing
        text = error.message if isinstance(error, click.ClickException) else str(error)
        first = (text.splitlines() or [type(error).__name__])[0]
        click.echo(f"recording {len(results)} erasure(s) failed: {first}", err=True)
        summary.unrecorded.extend(r.subject for r in results)
    results.clear()


def _print_summary(settings: HubSettings, summary: Summary, dry_run: bool) -> None:
    verb = "would forget" if dry_run else "forgot"
    click.echo(
        f"checked {summary.checked} person(s): {summary.expired} expired ({verb} them), "
        f"{summary.already_forgotten} already forgotten, {summary.open_spell} with an open "
        f"spell, {summary.within_period} within the retention period"
    )
    if summary.left_for_later:
        click.echo(
            f"{summary.left_for_later} more expired person(s) left for a later run (--limit)"
        )
    if summary.without_keys:
        click.echo(
            f"{summary.without_keys} of the expired had no data key: only records of before "
            "field encryption, which forgetting does not make unreadable"
        )
    if not dry_run and summary.expired:
        click.echo(f"erasures recorded in {settings.topic_disclosures} (status erased)")
