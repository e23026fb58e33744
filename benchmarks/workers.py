"""Workers that add up: drain one queue with 1, 2 and 4 ``send_queued_mail`` processes.

``make bench`` runs it after the outbox case, on the same throw-away PostgreSQL cluster
(``PGPORT``); by hand::

    make pg-up PGDIR=/tmp/pgbench && PGPORT=$(cat /tmp/pgbench/port) \\
        .venv/bin/python -m benchmarks.workers; make pg-down PGDIR=/tmp/pgbench

For each sink (one that answers at once, one that waits ``--delay-ms`` before every
reply, as a busy server does) and each number of workers: queue ``--messages`` (20,000)
with ``OUTBOX = "always"``, then run that many worker processes at once (each runs
:func:`django_multismtp.worker.drain`, what ``manage.py send_queued_mail`` runs; the
processes of :mod:`benchmarks.outbox`), and print msg/s and the ratio to one worker.
Every drain is checked (every message received once, every row sent, none left claimed).

The account has ``--connections`` connections (16): since ``max_connections`` is one
budget for every process (connection slots), the workers share them; more workers add
up only while the connections are not what limits the rate. The machine is shared:
the load average is printed with every figure.
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
    # (sink, workers): minimum ratio to one worker (issue 16)
    ("fast", 2): 1.5,
    ("delay", 2): 1.8,
    ("delay", 4): 3.0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__)
    parser.add_argument("--messages", type=int, default=20000, help="messages per drain (20000)")
    parser.add_argument("--workers", default="1,2,4", help="worker processes per drain (1,2,4)")
    parser.add_argument("--connections", type=int, default=16, help="of the account (16)")
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
    args.profile = False  # what benchmarks.outbox.drain reads
    args.prepared = False
    return args


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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
    from .sinks import AiosmtpdSink, start_sink

    def say(text: str) -> None:
        print(text, flush=True)

    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "messages": args.messages,
        "connections": args.connections,
        "batch": args.batch,
        "code": code_state(),
        "drains": [],
    }
    failed = False
    postmaster = outbox.postmaster_pid()
    always = {**settings.MULTISMTP, "OUTBOX": "always"}
    say(
        f"Workers, {args.messages} x text, 1 account x {args.connections} connections "
        f"(shared by the workers), batches of {args.batch}, PostgreSQL; {code_state()}"
    )
    for kind in [k.strip() for k in args.sinks.split(",") if k.strip()]:
        sink = (
            start_sink("auto", 1, 0.0)
            if kind == "fast"
            else AiosmtpdSink(1, args.delay_ms, every_reply=True, lean=args.delay_sink == "lean")
        )
        try:
            SmtpAccount.objects.all().delete()
            outbox.create_account(sink.ports[0], args.connections)
            say(f"  {sink.describe()}")
            one: float | None = None
            for workers in counts:
                outbox.reset()
                with override_settings(MULTISMTP=always):
                    for offset in range(0, args.messages, 1000):
                        size = min(1000, args.messages - offset)
                        EmailBackend(alias="default").send_messages(outbox.messages(size))
                before, sink_cpu = sink.messages(), sink.cpu_seconds()
                outcome = outbox.drain(workers, args, postmaster)
                sink_cpu = sink.cpu_seconds() - sink_cpu
                problems = outbox.check(args.messages, sink, before, outcome)
                rate = args.messages / outcome["seconds"]
                one = rate if workers == 1 else one
                ratio = rate / one if one else None
                target = TARGETS.get((kind, workers))
                verdict = ""
                if target is not None and ratio is not None:
                    verdict = f"  target >= {target:g}x: {'met' if ratio >= target else 'NOT met'}"
                say(
                    f"    {workers} worker(s) {rate:9.1f} msg/s  "
                    + (f"{ratio:.2f}x one worker" if ratio is not None else "")
                    + f"  {outcome['sessions']} SMTP sessions  "
                    + f"CPU ms/msg: workers {outcome['worker_cpu'] / args.messages * 1000:.2f}"
                    + f" database {outcome['database_cpu'] / args.messages * 1000:.2f}"
                    + f" sink {sink_cpu / args.messages * 1000:.2f}  "
                    + ("OK" if not problems else "PROBLEMS: " + "; ".join(problems))
                    + verdict
                    + f"  (load {load()})"
                )
                results["drains"].append(
                    {
                        "sink": kind,
                        "delay_ms": args.delay_ms if kind == "delay" else 0,
                        "workers": workers,
                        "msg_per_s": round(rate, 1),
                        "ratio": round(ratio, 2) if ratio is not None else None,
                        "sessions": outcome["sessions"],
                        "seconds": round(outcome["seconds"], 3),
                        "worker_cpu_s": round(outcome["worker_cpu"], 3),
                        "database_cpu_s": round(outcome["database_cpu"], 3),
                        "sink_cpu_s": round(sink_cpu, 3),
                        "problems": problems,
                        "load": os.getloadavg(),
                    }
                )
                failed = failed or bool(problems)
        finally:
            sink.close()
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        say(f"Results written to {args.json}")
    if failed:
        raise SystemExit("A drain lost, duplicated or left unsettled some messages (see above).")


if __name__ == "__main__":
    main()
