"""The outbox case: queue N messages, drain them with 1 and 2 worker processes.

``make bench`` runs it after the direct-send benchmark, against a throw-away PostgreSQL
cluster it starts and stops itself (``PGPORT``); by hand::

    make pg-up PGDIR=/tmp/pgbench && PGPORT=$(cat /tmp/pgbench/port) \\
        .venv/bin/python -m benchmarks.outbox --messages 20000; make pg-down PGDIR=/tmp/pgbench

One account with ``--connections`` connections on a no-delay sink. In the same run:

* **direct**: ``send_messages()`` of N messages through that account (no outbox), the
  reference;
* **enqueue**: the same N queued with ``OUTBOX = "always"`` (statements per call);
* **drain, W workers**: W processes running :func:`django_multismtp.worker.drain` (what
  ``manage.py send_queued_mail`` runs), started and connected to the database first, then
  released together; wall time from the first start to the last finish.

CPU per message: the worker processes' own CPU (``getrusage`` in each, every thread,
Django's start-up excluded), the direct send's the same way in this process, and the
database's from ``/proc/<pid>/stat`` of the cluster's processes (the postmaster and its
children) before and after. Every drain is checked: the sink received exactly N, every
row is settled as sent, one "sent" log row per Message-ID, no row left claimed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "outbox"
TICK = os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.outbox", description=__doc__)
    parser.add_argument("--messages", type=int, default=20000, help="messages per drain (20000)")
    parser.add_argument("--workers", default="1,2", help="worker processes per drain (1,2)")
    parser.add_argument("--connections", type=int, default=4, help="of the account (4)")
    parser.add_argument("--batch", type=int, default=100, help="OUTBOX_BATCH_SIZE (100)")
    parser.add_argument("--sink", choices=["auto", "aiosmtpd", "smtp-sink"], default="auto")
    parser.add_argument("--profile", action="store_true", help="cProfile one worker's drain")
    parser.add_argument(
        "--prepared",
        action="store_true",
        help="psycopg server-side binding with prepared statements (DATABASES OPTIONS "
        "server_side_binding, prepare_threshold), for the direct send and the drains alike",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    # benchmarks.workers: each worker's send_queued_mail --connections
    parser.add_argument("--worker-connections", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def setup_django(create: bool, prepared: bool = False) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings_pg"
    if prepared:
        # Not Django's default (client-side binding, nothing prepared): every statement
        # is then parsed and planned anew. Set before any connection is made.
        from django.conf import settings as django_settings

        django_settings.DATABASES["default"]["OPTIONS"] = {
            "server_side_binding": True,
            "prepare_threshold": 2,
        }
    if create:
        import psycopg

        from . import settings_pg

        database = settings_pg.DATABASES["default"]
        with psycopg.connect(
            host=database["HOST"],
            port=database["PORT"],
            user=database["USER"],
            dbname="postgres",
            autocommit=True,
        ) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database["NAME"]}"')
            admin.execute(f'CREATE DATABASE "{database["NAME"]}"')
    import django

    django.setup()
    if create:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


# -- CPU -------------------------------------------------------------------------------
def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def postmaster_pid() -> int:
    """The postmaster of the cluster we are connected to: our backend's parent."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    stat = _stat(str(backend))
    if stat is None:
        raise RuntimeError("The database server is not on this machine: no CPU figures.")
    return stat[0]


def database_cpu(postmaster: int) -> dict[int, float]:
    """CPU seconds of the postmaster and each of its children, by pid."""
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(entry)
        if stat is not None and (int(entry) == postmaster or stat[0] == postmaster):
            cpu[int(entry)] = stat[1]
    return cpu


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """Processes started in between count from zero; ones that ended are not seen (the
    workers stay connected until this is read)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


# -- the worker process ------------------------------------------------------------------
def child(args: argparse.Namespace) -> None:
    """Connect, say ready, wait for "go", drain, report, wait for "exit"."""
    setup_django(create=False, prepared=args.prepared)
    from django_multismtp import transport, worker
    from django_multismtp.models import OutboxMessage

    sessions = [0]
    opened = transport.Session.open

    async def counting_open(self: Any) -> None:
        sessions[0] += 1
        await opened(self)

    transport.Session.open = counting_open  # type: ignore[method-assign]
    OutboxMessage.objects.exists()  # connected before the clock starts
    print("ready", flush=True)
    sys.stdin.readline()
    profiler = None
    if args.profile:
        import cProfile

        # CPU time of the calling thread (not the waits for the database)
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
    started, cpu = time.time(), own_cpu()
    result = worker.drain(batch_size=args.batch, connections=args.worker_connections)
    ended, cpu = time.time(), own_cpu() - cpu
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats("django_multismtp", 40)
        sys.stderr.write(out.getvalue())
    report = {
        "started": started,
        "ended": ended,
        "cpu": cpu,
        "sent": result.sent,
        "retrying": result.retrying,
        "failed": result.failed,
        "lost_lease": result.lost_lease,
        "sessions": sessions[0],
    }
    print(json.dumps(report), flush=True)
    sys.stdin.readline()


def drain(workers: int, args: argparse.Namespace, postmaster: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "benchmarks.outbox", "--child", "--batch", str(args.batch)]
    command += ["--prepared"] if args.prepared else []
    limit = getattr(args, "worker_connections", None)
    command += ["--worker-connections", str(limit)] if limit else []
    processes = [
        subprocess.Popen(
            command + (["--profile"] if args.profile and index == 0 else []),
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for index in range(workers)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError("A worker process did not start")
        database = database_cpu(postmaster)
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = []
        for process in processes:
            assert process.stdout is not None
            reports.append(json.loads(process.stdout.readline()))
        database_seconds = cpu_spent(database, database_cpu(postmaster))
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("exit\n")
            process.stdin.flush()
            process.wait(timeout=60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    wall = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    return {
        "workers": workers,
        "seconds": wall,
        "worker_cpu": sum(r["cpu"] for r in reports),
        "database_cpu": database_seconds,
        "sent": sum(r["sent"] for r in reports),
        "retrying": sum(r["retrying"] for r in reports),
        "failed": sum(r["failed"] for r in reports),
        "lost_lease": sum(r["lost_lease"] for r in reports),
        "sessions": sum(r["sessions"] for r in reports),
    }


# -- the parent --------------------------------------------------------------------------
def create_account(port: int, connections: int) -> Any:
    """The one account every drain sends through: the sink on ``port``, no TLS, no AUTH."""
    from django_multismtp.models import SmtpAccount

    return SmtpAccount.objects.create(
        name=ACCOUNT,
        purpose="system",
        from_email="bench@example.com",
        host="127.0.0.1",
        port=port,
        security="none",
        auth_method="none",
        timeout=30,
        max_connections=connections,
    )


def messages(count: int) -> list[Any]:
    from .run import Workload, build_messages

    batch = build_messages(Workload("text", count, 0, 0.0), "none")
    for message in batch:
        message.smtp_account = ACCOUNT
    return batch


def reset() -> None:
    from django_multismtp.models import DeliveryLog, OutboxMessage

    DeliveryLog.objects.all().delete()
    OutboxMessage.objects.all().delete()


def check(count: int, sink: Any, before: int | None, outcome: dict[str, Any]) -> list[str]:
    """What went wrong in a drain (nothing: an empty list)."""
    from django.db.models import Count

    from django_multismtp.models import DeliveryLog, OutboxMessage

    problems = []
    after = sink.messages()
    received = None if before is None or after is None else after - before
    if received is not None and received != count:
        problems.append(f"the sink received {received} of {count}")
    statuses = dict(OutboxMessage.objects.values_list("status").annotate(n=Count("id")).order_by())
    if statuses != {"sent": count}:
        problems.append(f"rows by status: {statuses}")
    if OutboxMessage.objects.exclude(locked_by="").exists():
        problems.append("rows left claimed")
    sent_log = DeliveryLog.objects.filter(outcome="sent")
    distinct = sent_log.values("message_id").distinct().count()
    if sent_log.count() != count or distinct != count:
        problems.append(f"{sent_log.count()} sent log rows for {distinct} Message-IDs")
    if outcome["sent"] != count:
        problems.append(f"the workers report {outcome['sent']} sent")
    outcome["received"] = received
    outcome["duplicates"] = (received - count) if received is not None else None
    return problems


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    if args.messages <= 0:
        print("Outbox case skipped (--messages 0).")
        return
    if not os.environ.get("PGPORT"):
        sys.exit("PGPORT is not set: run `make bench`, or start a cluster (see --help).")
    setup_django(create=True, prepared=args.prepared)
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, override_settings

    from django_multismtp.backends import EmailBackend

    from .run import code_state
    from .sinks import start_sink

    def say(text: str) -> None:
        print(text, flush=True)

    sink = start_sink(args.sink, 1, 0.0)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "messages": args.messages,
        "connections": args.connections,
        "batch": args.batch,
        "prepared": args.prepared,
        "code": code_state(),
        "sink": sink.describe(),
    }
    try:
        create_account(sink.ports[0], args.connections)
        postmaster = postmaster_pid()
        count = args.messages
        binding = " (prepared statements)" if args.prepared else ""
        say(
            f"Outbox, {count} x text, 1 account x {args.connections} connections, "
            f"PostgreSQL{binding}"
        )
        say(f"  {sink.describe()}; {code_state()}")
        say(f"  load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

        # The direct send of the same account: the reference.
        EmailBackend(alias="default").send_messages(messages(50))  # warm-up
        reset()
        batch = messages(count)
        before, database = sink.messages(), database_cpu(postmaster)
        cpu, started = own_cpu(), time.perf_counter()
        sent = EmailBackend(alias="default").send_messages(batch)
        seconds, cpu = time.perf_counter() - started, own_cpu() - cpu
        database_seconds = cpu_spent(database, database_cpu(postmaster))
        after = sink.messages()
        if sent != count or (before is not None and after is not None and after - before != count):
            raise RuntimeError(f"direct: sent {sent}, sink {before}->{after}, wanted {count}")
        direct = {
            "seconds": seconds,
            "msg_per_s": count / seconds,
            "cpu_ms": cpu / count * 1000,
            "database_cpu_ms": database_seconds / count * 1000,
        }
        results["direct"] = direct
        say(
            f"  {'direct send_messages()':<24} {direct['msg_per_s']:8.1f} msg/s  "
            f"process {direct['cpu_ms']:.3f} ms/msg  database "
            f"{direct['database_cpu_ms']:.3f} ms/msg"
        )

        always = {**settings.MULTISMTP, "OUTBOX": "always"}
        drains = []
        failed = False
        for workers in [int(w) for w in args.workers.split(",") if w.strip()]:
            reset()
            chunk = 1000
            with override_settings(MULTISMTP=always):
                started = time.perf_counter()
                statements = []
                for offset in range(0, count, chunk):
                    size = min(chunk, count - offset)
                    with CaptureQueriesContext(connection) as queries:
                        EmailBackend(alias="default").send_messages(messages(size))
                    statements.append(len(queries))
                enqueue_seconds = time.perf_counter() - started
            before = sink.messages()
            outcome = drain(workers, args, postmaster)
            problems = check(count, sink, before, outcome)
            outcome.update(
                msg_per_s=count / outcome["seconds"],
                ratio=count / outcome["seconds"] / direct["msg_per_s"],
                worker_cpu_ms=outcome["worker_cpu"] / count * 1000,
                database_cpu_ms=outcome["database_cpu"] / count * 1000,
                enqueue_msg_per_s=count / enqueue_seconds,
                enqueue_statements=sorted(set(statements)),
                problems=problems,
                load=os.getloadavg(),
            )
            drains.append(outcome)
            say(
                f"  {f'drain, {workers} worker(s)':<24} {outcome['msg_per_s']:8.1f} msg/s  "
                f"{outcome['ratio']:.2f}x direct  worker {outcome['worker_cpu_ms']:.3f} ms/msg  "
                f"database {outcome['database_cpu_ms']:.3f} ms/msg  "
                f"{outcome['sessions']} SMTP sessions  "
                f"duplicates {outcome['duplicates']}  "
                f"{'OK' if not problems else 'PROBLEMS: ' + '; '.join(problems)}"
            )
            say(
                f"  {'':<24} (enqueued at {outcome['enqueue_msg_per_s']:.0f} msg/s, "
                f"{'/'.join(map(str, outcome['enqueue_statements']))} statements per "
                f"send_messages() of {chunk}; load average "
                f"{' '.join(f'{x:.2f}' for x in outcome['load'])})"
            )
            failed = failed or bool(problems)
        results["drains"] = drains
    finally:
        sink.close()
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        say(f"Results written to {args.json}")
    if failed:
        sys.exit("A drain lost, duplicated or left unsettled some messages (see above).")


if __name__ == "__main__":
    main()
