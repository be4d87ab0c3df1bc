"""deploy/demo.sh's delivery half: a brief fault, the wait until the outboxes drain, the table.

Run by demo.sh with the hub's venv, never on its own:

    python deploy/demo_delivery.py snapshot --receivers URL > baseline.json
    python deploy/demo_delivery.py fault --receivers URL --receiver fund --fail-share 0.3 --for 1.5
    python deploy/demo_delivery.py wait --receivers URL --deliver-metrics URL \
        --router-done FILE --router-output FILE --baseline baseline.json [--timeout 150]

"Drained" is decided from what the processes themselves count, not from consumer-group lag:
an outbox's log end offset includes transaction markers, so end minus committed offset stays
above zero on a drained transactional topic. Instead: the router ran with ``--until-idle`` and
exited (its last line says how many records it routed per destination), and every destination
with a worker has settled (delivered or dead-lettered, from ``hub deliver``'s metrics) at least
as many events as were routed to it in this run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

#: Receiver path prefix -> destination of the default routes.
DESTINATION_OF = {
    "kela": "kela",
    "fund": "funds",
    "provider": "providers",
    "municipal": "municipal",
}
#: One client for every request (each httpx.get would build a new TLS context).
HTTP = httpx.Client(timeout=5)
ROUTED_LINE = re.compile(
    r"routed (\d+) log record\(s\) in \d+ transaction\(s\): (.*?); dead letters: (.*?);"
)


def receiver_stats(url: str) -> dict[str, Any]:
    answer = HTTP.get(
        f"{url}/_stats",
    )
    answer.raise_for_status()
    stats: dict[str, Any] = answer.json()
    return stats


def by_destination(stats: dict[str, Any]) -> dict[str, Counter[str]]:
    """The receivers' counts (applied, duplicates, refused, failed, ...) summed per destination."""
    result: dict[str, Counter[str]] = {}
    for receiver, counts in stats["receivers"].items():
        destination = DESTINATION_OF.get(receiver.split("/", 1)[0], receiver)
        result.setdefault(destination, Counter()).update(counts)
    return result


def delivery_metrics(url: str) -> dict[str, Counter[str]]:
    """Per destination: delivered, retried, dead letters, duplicates, buffered, from /metrics."""
    try:
        text = HTTP.get(
            url,
        ).text
    except httpx.HTTPError:
        return {}
    wanted = {
        "hub_delivery_delivered": "delivered",
        "hub_delivery_retried": "retried",
        "hub_delivery_dead_letters": "dead letters",
        "hub_delivery_duplicates": "duplicates",
        "hub_delivery_buffered": "buffered",
    }
    result: dict[str, Counter[str]] = {}
    for family in text_string_to_metric_families(text):
        name = wanted.get(family.name)
        if name is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            destination = sample.labels.get("destination", "?")
            result.setdefault(destination, Counter())[name] += int(sample.value)
    return result


def routed_counts(output: Path) -> tuple[int, dict[str, int], str] | None:
    """(log records, routed per destination, dead letters) from hub route's last line."""
    match = ROUTED_LINE.search(output.read_text(encoding="utf-8", errors="replace"))
    if match is None:
        return None
    routed = {
        name: int(count)
        for name, count in (part.rsplit(" ", 1) for part in match[2].split(", ") if " " in part)
    }
    return int(match[1]), routed, match[3]


def snapshot(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            json.dump(receiver_stats(args.receivers), sys.stdout)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                sys.exit("the receivers did not answer in 30 s")
            time.sleep(0.2)


def fault(args: argparse.Namespace) -> None:
    """Make receivers fail a share of requests (503) once the first request arrived, briefly.

    Short enough that every retry (the default schedule's first step is 2.5-5 s with jitter)
    comes after the fault is over, so the demo shows retries without waiting for the next step.
    """
    control = f"{args.receivers}/_control"
    HTTP.post(
        control,
        json={"receiver": args.receiver, "fail_share": args.fail_share},
    )
    start = receiver_stats(args.receivers)["total"]
    deadline = time.monotonic() + 120
    while receiver_stats(args.receivers)["total"] == start and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(args.duration)
    HTTP.post(
        control,
        json={"receiver": args.receiver, "fail_share": 0},
    )


def worker_destinations() -> list[str]:
    """The destinations of the routes that have a delivery worker (not transport outbox)."""
    from hub.routing.routes import Transport, load_routes
    from hub.settings import get_settings

    config = load_routes(get_settings())
    return [n for n, d in config.destinations.items() if d.transport is not Transport.OUTBOX]


def running(pid: int | None) -> bool:
    """Whether *pid* still runs (a zombie, exited but not yet reaped by demo.sh, does not)."""
    if pid is None:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc (macOS): cannot tell, assume yes
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait(args: argparse.Namespace) -> None:
    baseline = by_destination(json.loads(Path(args.baseline).read_text()))
    done_file, output = Path(args.router_done), Path(args.router_output)
    workers = worker_destinations()
    started = time.monotonic()
    routed: tuple[int, dict[str, int], str] | None = None
    metrics: dict[str, Counter[str]] = {}
    last = ""
    while True:
        elapsed = time.monotonic() - started
        if routed is None and done_file.exists():
            routed = routed_counts(output)
            if routed is None:
                sys.exit(f"hub route ended without its summary; see {output}")
        if not running(args.deliver_pid):
            sys.exit(f"hub deliver stopped early; see {args.deliver_log}")
        metrics = delivery_metrics(args.deliver_metrics)
        settled = {
            d: metrics.get(d, Counter())["delivered"] + metrics.get(d, Counter())["dead letters"]
            for d in workers
        }
        progress = ", ".join(f"{d} {settled[d]}" for d in workers)
        if routed is None:
            state = f"routing; settled {progress}"
        else:
            behind = {d: routed[1].get(d, 0) - settled[d] for d in workers}
            if all(n <= 0 for n in behind.values()):
                break
            of = ", ".join(f"{d} {routed[1].get(d, 0)}" for d in workers)
            state = f"routed; settled {progress} (of {of})"
        if state != last:
            print(f"  {elapsed:5.1f} s  {state}", flush=True)
            last = state
        if elapsed > args.timeout:
            print(f"  not drained after {args.timeout:.0f} s; the table shows what was done so far")
            break
        time.sleep(0.5)
    print(f"  drained in {time.monotonic() - started:.1f} s", flush=True)
    report(routed, metrics, by_destination(receiver_stats(args.receivers)), baseline, workers)


def report(
    routed: tuple[int, dict[str, int], str] | None,
    metrics: dict[str, Counter[str]],
    receivers: dict[str, Counter[str]],
    baseline: dict[str, Counter[str]],
    workers: list[str],
) -> None:
    """Per destination: routed (router), delivered/retried/dead letters (workers), applied and
    dropped as duplicate (the receivers, counted since this run's start)."""
    routed_to = routed[1] if routed else {}
    header = (
        "destination",
        "routed",
        "delivered",
        "retried",
        "dead letters",
        "applied",
        "dropped as duplicate",
    )
    rows: list[tuple[str, ...]] = []
    total: Counter[str] = Counter()
    for name in workers:
        sent = metrics.get(name, Counter())
        got, before = receivers.get(name, Counter()), baseline.get(name, Counter())
        counts = {
            "routed": routed_to.get(name, 0),
            "delivered": sent["delivered"],
            "retried": sent["retried"],
            "dead letters": sent["dead letters"],
            "applied": got["applied"] - before["applied"],
            "dropped as duplicate": got["duplicates"] - before["duplicates"],
        }
        total.update(counts)
        rows.append((name, *(str(counts[c]) for c in header[1:])))
    rows.append(("total", *(str(total[c]) for c in header[1:])))
    for name in sorted(set(routed_to) - set(workers)):
        rows.append((f"{name} *", str(routed_to[name]), *("-" for _ in header[2:])))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        pairs = enumerate(zip(row, widths, strict=True))
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in pairs).rstrip())
    if set(routed_to) - set(workers):
        print("* no delivery worker: its reader takes the records from its outbox topic")
    if routed is not None:
        print(f"log records routed in this run: {routed[0]}; router dead letters: {routed[2]}")
    print(
        "delivered: the receiver answered 2xx (applied + dropped as duplicate); retried: failed "
        "attempts sent again later;\ndead letters: refused or out of retries (hub dlq list); "
        "dropped as duplicate: the receiver had the event id (webhook-id) already"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("snapshot")
    one.add_argument("--receivers", required=True)
    two = commands.add_parser("fault")
    two.add_argument("--receivers", required=True)
    two.add_argument("--receiver", default="fund")
    two.add_argument("--fail-share", type=float, default=0.3)
    two.add_argument("--for", dest="duration", type=float, default=1.5)
    three = commands.add_parser("wait")
    three.add_argument("--receivers", required=True)
    three.add_argument("--deliver-metrics", required=True)
    three.add_argument("--router-done", required=True)
    three.add_argument("--router-output", required=True)
    three.add_argument("--baseline", required=True)
    three.add_argument("--timeout", type=float, default=150)
    three.add_argument("--deliver-pid", type=int, default=None)
    three.add_argument("--deliver-log", default="the hub deliver log")
    args = parser.parse_args()
    try:
        {"snapshot": snapshot, "fault": fault, "wait": wait}[args.command](args)
    except KeyboardInterrupt:  # Ctrl-C: demo.sh's trap stops the processes
        sys.exit(130)
    except httpx.HTTPError as error:
        sys.exit(f"demo: the receivers or hub deliver stopped answering ({error})")


if __name__ == "__main__":
    main()
