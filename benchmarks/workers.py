"""Workers that add up: drain one queue with 1, 2 and 4 ``send_queued_mail`` processes.

``make bench`` runs it after the outbox case, on the same throw-away PostgreSQL cluster
(``PGPORT``); by hand::

    make pg-up PGDIR=/tmp/pgbench && PGPORT=$(cat /tmp/pgbench/port) \\
        .venv/bin/python -m benchmarks.workers; make pg-down PGDIR=/tmp/pgbench

For each sink (one that answers at once, one that waits ``--delay-ms`` before every
reply, as a busy server does) and each number of workers: queue ``--messages`` (20,000)
with ``OUTBOX = "always"``, then run that many worker processes at once (each runs
:func:`django_multismtp.worker.drain`, what ``manage.py send_queued_mail`` runs; the
processes of :mod:`benchmarks.outbox`), and print msg/s, the ratio to one worker and
the CPU per message of the workers, the database and the sink. Every drain is checked
(every message received once, every row sent, none left claimed).

Two cases, because what several workers can add depends on the account:

* **each worker its part** (the first table): the account allows ``--connections``
  (16), each worker opens at most ``--worker-connections`` (4) of them, as
  ``send_queued_mail --connections 4`` does. One worker keeps its 4 busy, and the
  account has room for more: this is where workers are meant to add up, until the
  account's budget (4 workers x 4 = 16) or the machine's cores are used.
* **the whole budget** (the second table, ``--shared-sinks``, the delay sink by
  default, ``--shared-messages`` 4,000 per drain): the same account, no per-worker
  limit, so one worker alone spreads each batch over all 16 connections.
  ``max_connections`` is one budget for every process (connection slots), so a second
  worker gets half of them back rather than more: against a server that is slow per
  reply the account's connections are the limit, whatever the number of workers.

The machine may be shared: the load average is printed with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from . import outbox

TARGETS = {
    # (sink, workers): minimum ratio to one worker (issue 16), each worker its part
    ("fast", 2): 1.5,
    ("delay", 2): 1.8,
    ("delay", 4): 3.0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.workers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=int, default=20000, help="messages per drain (20000)")
    parser.add_argument("--workers", default="1,2,4", help="worker processes per drain (1,2,4)")
    parser.add_argument("--connections", type=int, default=16, help="of the account (16)")
    parser.add_argument(
        "--worker-connections",
        type=int,
        default=4,
        help="each worker's send_queued_mail --connections in the first table (4)",
    )
    parser.add_argument(
        "--shared-sinks",
        default="delay",
        help="sinks for which the whole-budget case is run too, no per-worker limit "
        "(delay; '' skips it)",
    )
    parser.add_argument(
        "--shared-messages",
        type=int,
        default=4000,
        help="messages per drain in the whole-budget case (4000: it only shows the limit)",
    )
    parser.add_argument("--batch", type=int, default=100, help="OUTBOX_BATCH_SIZE (100)")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="before every reply (5)")
    parser.add_argument("--sinks", default="fast,delay", help="fast, delay or both (fast,delay)")
    parser.add_argument(
        "--delay-sink",
        choices=("lean", "aiosmtpd"),
        default="lean",
        help="what serves the delay sink: benchmarks/sink.py --lean (a bare asyncio "
        "protocol, the default) or its aiosmtpd server (about 0.8 ms of CPU per message)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.worker_connections < 1 or args.connections < 1:
        parser.error("--connections and --worker-connections must be at least 1")
    args.profile = False  # what benchmarks.outbox.drain reads
    args.prepared = False
    return args


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.messages <= 0:
        print("Workers case skipped (--messages 0).")
        return
    if not os.environ.get("PGPORT"):
        raise SystemExit("PGPORT is not set: run `make bench`, or start a cluster (see --help).")
    outbox.setup_django(create=True)
    from django.conf import settings
    from django.test.utils import override_settings

    from django_multismtp.backends import EmailBackend
    from django_multismtp.models import SmtpAccount

    from .run import code_state
    from .sinks import AiosmtpdSink, Sink, start_sink

    def say(text: str) -> None:
        print(text, flush=True)

    counts = [int(w) for w in names(args.workers)]
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "messages": args.messages,
        "connections": args.connections,
        "worker_connections": args.worker_connections,
        "batch": args.batch,
        "code": code_state(),
        "drains": [],
    }
    failed = False
    postmaster = outbox.postmaster_pid()
    always = {**settings.MULTISMTP, "OUTBOX": "always"}

    def table(kind: str, sink: Sink, limit: int | None, count: int) -> None:
        nonlocal failed
        if limit:
            say(
                f"  each worker its part: send_queued_mail --connections {limit}, "
                f"account of {args.connections}; {sink.describe()}"
            )
        else:
            say(
                f"  the whole budget: no per-worker limit, each worker may take all "
                f"{args.connections} (shared through the slots), {count} messages; "
                f"{sink.describe()}"
            )
        one: float | None = None
        for workers in counts:
            requeue(count)
            before, sink_cpu = sink.messages(), sink.cpu_seconds()
            drain_args = argparse.Namespace(**{**vars(args), "worker_connections": limit})
            outcome = outbox.drain(workers, drain_args, postmaster)
            sink_cpu = sink.cpu_seconds() - sink_cpu
            problems = outbox.check(count, sink, before, outcome)
            rate = count / outcome["seconds"]
            one = rate if workers == 1 else one
            ratio = rate / one if one else None
            target = TARGETS.get((kind, workers)) if limit else None
            verdict = ""
            if target is not None and ratio is not None:
                verdict = f"  target >= {target:g}x: {'met' if ratio >= target else 'NOT met'}"
            per = 1000 / count
            say(
                f"    {workers} worker(s) {rate:8.1f} msg/s  "
                + (f"{ratio:.2f}x one worker" if ratio is not None else "")
                + f"  {outcome['sessions']} SMTP sessions  CPU ms/msg: workers "
                + f"{outcome['worker_cpu'] * per:.2f} database {outcome['database_cpu'] * per:.2f}"
                + f" sink {sink_cpu * per:.2f}  "
                + ("OK" if not problems else "PROBLEMS: " + "; ".join(problems))
                + verdict
                + f"  (load {load()})"
            )
            results["drains"].append(
                {
                    "sink": kind,
                    "delay_ms": args.delay_ms if kind == "delay" else 0,
                    "worker_connections": limit,
                    "messages": count,
                    "workers": workers,
                    "msg_per_s": round(rate, 1),
                    "ratio": round(ratio, 2) if ratio is not None else None,
                    "seconds": round(outcome["seconds"], 3),
                    "worker_cpu_s": round(outcome["worker_cpu"], 3),
                    "database_cpu_s": round(outcome["database_cpu"], 3),
                    "sink_cpu_s": round(sink_cpu, 3),
                    "sessions": outcome["sessions"],
                    "problems": problems,
                    "load": os.getloadavg(),
                }
            )
            failed = failed or bool(problems)

    snapshot = "bench_workers_queued"

    def queue() -> None:
        """Queue the messages once per sink (through the backend, as a site does) and
        keep a copy of the rows: queueing 20,000 took longer than draining them."""
        from django.db import connection

        from django_multismtp.models import OutboxMessage

        outbox.reset()
        with override_settings(MULTISMTP=always):
            for offset in range(0, args.messages, 1000):
                size = min(1000, args.messages - offset)
                EmailBackend(alias="default").send_messages(outbox.messages(size))
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {snapshot}")
            cursor.execute(
                f"CREATE TABLE {snapshot} AS SELECT * FROM {OutboxMessage._meta.db_table}"  # noqa: S608 (our names)
            )

    def requeue(count: int) -> None:
        """The queue as :func:`queue` left it (its first ``count`` rows): the same rows,
        due, unclaimed."""
        from django.db import connection

        from django_multismtp.models import OutboxMessage

        outbox.reset()
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {OutboxMessage._meta.db_table} "  # noqa: S608
                f"SELECT * FROM {snapshot} ORDER BY id LIMIT %s",
                [count],
            )

    say(
        f"Workers, {args.messages} x text, 1 account x {args.connections} connections "
        f"(one budget for every worker), batches of {args.batch}, PostgreSQL; "
        f"{code_state()}; load {load()}"
    )
    shared = names(args.shared_sinks)
    for kind in names(args.sinks):
        sink = (
            start_sink("auto", 1, 0.0)
            if kind == "fast"
            else AiosmtpdSink(1, args.delay_ms, every_reply=True, lean=args.delay_sink == "lean")
        )
        try:
            SmtpAccount.objects.all().delete()
            outbox.create_account(sink.ports[0], args.connections)
            queue()
            table(kind, sink, args.worker_connections, args.messages)
            if kind in shared:
                table(kind, sink, None, min(args.shared_messages, args.messages))
        finally:
            sink.close()
    say(
        "  Each worker its part: workers add up until the account's connections or the "
        "machine's cores are used. The whole budget: one worker already spreads its "
        "batches over every connection, and against a server slow per reply those "
        "connections are the limit, whatever the number of workers."
    )
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        say(f"Results written to {args.json}")
    if failed:
        raise SystemExit("A drain lost, duplicated or left unsettled some messages (see above).")


if __name__ == "__main__":
    main()
