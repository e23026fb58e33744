"""The benchmark: Django's SMTP backend against ours, through local SMTP sinks.

Workloads: ``--messages`` text messages and ``--attachment-messages`` messages with an
``--attachment-kb`` attachment sent to a sink that answers at once, then
``--delay-messages`` text messages sent to a sink that waits ``--delay-ms`` before each
DATA reply (or every reply), like a remote server, and to a sink that models
``--latency-ms`` of round trip (it waits only before a reply the client awaits). Each
workload is sent by

* ``stock``: ``django.core.mail.backends.smtp.EmailBackend``, one connection;
* ``one``: ``django_multismtp.backends.EmailBackend`` through one account
  (``max_connections=1``);
* ``four``: ours through four accounts on four ports (``max_connections=4`` each), the
  messages spread over them round-robin with the ``smtp_account`` hint;
* ``four1``: the same with ``max_connections=1`` (the pool's accounts, hinted);
* ``pool1`` / ``pool4``: four accounts of one purpose and priority (a pool) with 1 or 4
  connections each, the messages sent as a site sends them: no hints, so the pool
  policy (``spread``) shares them out;
* ``bare`` (``--ceiling``): aiosmtplib's ``sendmail`` alone over 4 x 4 connections, no
  Django backend: the reference for what an aiosmtplib client reaches.

Each cell is timed ``--runs`` times (runs interleaved over the backends, median
reported), then sent once more with ``tracemalloc`` on and the database queries
captured: tracing slows Python down several times, so it never runs while timing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from .sinks import SMTP_SINK, AiosmtpdSink, Sink, start_sink

ROOT = Path(__file__).resolve().parent.parent
FROM_EMAIL = "Benchmark <bench@example.com>"
BODY_LINE = (
    "Your order has shipped and is on its way; track it from your account page at any time.\n"
)
#: (key, label, accounts used, max_connections of each account)
BACKENDS = [
    ("stock", "Django SMTP (stock)", 0, 1),
    ("one", "multismtp, 1 account", 1, 1),
    ("four1", "multismtp, 4 accounts", 4, 1),
    ("pool1", "multismtp, no hints", 4, 1),
    ("four", "multismtp, 4 accounts", 4, 4),
    ("pool4", "multismtp, no hints", 4, 4),
]
#: The accounts of the pool (one purpose, one priority; "four1", "pool1", "pool4").
POOL = [f"pool-{index}" for index in range(1, 5)]
#: --ceiling: no Django backend at all, only aiosmtplib over as many connections as "four".
CEILING = ("bare", "bare aiosmtplib sendmail", 4, 4)
TARGETS = [
    # (workload, sink mode, sink delay in ms, backend, minimum ratio ours/stock)
    # The "Fast" issue:
    ("text", "none", 0.0, "one", 0.9),
    ("text", "data", 5.0, "four", 8.0),
    # #16, "Scale without hints" (the first kept from the pipelining work):
    ("text", "none", 0.0, "one", 1.7),
    ("text", "every", 5.0, "pool1", 3.5),
    ("text", "every", 5.0, "pool4", 12.0),
    ("text", "rtt", 5.0, "pool4", 30.0),
]
#: What each sink mode does with its delay, for the tables.
SINK_MODES = {
    "none": "no delay",
    "data": "{delay:g} ms before each DATA reply",
    "every": "{delay:g} ms before every reply",
    "rtt": "{delay:g} ms round trip",
}
WARMUP_MESSAGES = 20


@dataclasses.dataclass
class Workload:
    key: str  # "text" or "attachment"
    messages: int
    attachment_kb: int
    delay_ms: float
    #: "none", "data" (delay before the end of DATA's reply), "every" (before every
    #: reply) or "rtt" (round trip: before each reply the client awaits)
    sink: str = "none"

    @property
    def label(self) -> str:
        size = f"{self.attachment_kb} KB attachment" if self.attachment_kb else "text"
        return f"{self.messages} x {size}"

    @property
    def delay_label(self) -> str:
        return SINK_MODES[self.sink].format(delay=self.delay_ms)


@dataclasses.dataclass
class Result:
    workload: str
    label: str
    messages: int
    attachment_kb: int
    delay_ms: float
    sink_mode: str
    backend: str
    backend_label: str
    accounts: int
    max_connections: int
    seconds: list[float] = dataclasses.field(default_factory=list)
    sink_cpu: list[float] = dataclasses.field(default_factory=list)
    peak_mb: float | None = None
    queries: int | None = None
    ratio: float | None = None

    @property
    def rates(self) -> list[float]:
        return [self.messages / seconds for seconds in self.seconds]

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def sink_busy(self) -> float:
        """Median share of one core the sink used while this cell was timed."""
        return statistics.median(c / s for c, s in zip(self.sink_cpu, self.seconds, strict=True))

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["msgs_per_sec_runs"] = [round(rate, 1) for rate in self.rates]
        data["msgs_per_sec"] = round(self.rate, 1)
        data["sink_cpu_share"] = round(self.sink_busy, 3)
        return data


# -- command line ----------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Messages per second, peak memory and queries: Django's SMTP backend "
        "against django-multismtp, through local SMTP sinks on 127.0.0.1.",
    )
    parser.add_argument("--messages", type=int, default=2000, help="text messages (2000)")
    parser.add_argument(
        "--attachment-kb",
        type=int,
        default=100,
        help="size of the attachment of the attachment workload; 0 skips it (100)",
    )
    parser.add_argument(
        "--attachment-messages",
        type=int,
        default=200,
        help="messages in the attachment workload (200)",
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per cell (3)")
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=5.0,
        help="delay of the slow sink before each DATA reply; 0 skips the slow sink (5)",
    )
    parser.add_argument(
        "--delay-messages",
        type=int,
        default=1000,
        help="text messages sent to the slow sink, where the stock backend needs about 7 ms "
        "for each (1000)",
    )
    parser.add_argument(
        "--delay-attachments",
        action="store_true",
        help="also send the attachment workload to the slow sink",
    )
    parser.add_argument(
        "--sink",
        choices=["auto", "aiosmtpd", "smtp-sink"],
        default="auto",
        help="no-delay sink: Postfix's smtp-sink when installed (auto), or benchmarks/sink.py",
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="add a row per workload: bare aiosmtplib over 4x4 connections, no Django backend",
    )
    parser.add_argument(
        "--no-pipelining",
        action="store_true",
        help="sinks do not offer PIPELINING (RFC 2920), as some older servers do not",
    )
    parser.add_argument(
        "--delay-every-reply",
        action="store_true",
        help="the slow sink waits before every reply, one after another, not only before "
        "the end of DATA's",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=5.0,
        help="round trip of the latency sink, which waits only before a reply the client "
        "awaits (--delay-messages messages); 0 skips it (5)",
    )
    parser.add_argument(
        "--latency-sink",
        choices=("lean", "aiosmtpd"),
        default="lean",
        help="the latency sink: benchmarks/sink.py --lean, a bare asyncio protocol using "
        "about a fifth of aiosmtpd's CPU (default), or the aiosmtpd sink of earlier runs",
    )
    parser.add_argument(
        "--backends",
        default=",".join(key for key, *_ in BACKENDS),
        help="comma-separated backends to run (stock is always run: the ratios need it); "
        "default: " + ",".join(key for key, *_ in BACKENDS),
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="also queue text messages in the outbox and drain them with the worker: "
        "queries per batch of 10 and 200, and per settle write",
    )
    parser.add_argument(
        "--memory-messages",
        type=int,
        default=100_000,
        help="small messages in one send_messages() call for the flat-memory figures "
        "(benchmarks/memory.py: peak memory, SQL statements per slice); 0 skips it (100000)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the tables, profile one text batch per multismtp backend (cProfile)",
    )
    args = parser.parse_args(argv)
    if min(args.messages, args.runs, args.attachment_messages, args.delay_messages) < 1:
        parser.error(
            "--messages, --attachment-messages, --delay-messages and --runs must be at least 1"
        )
    if args.attachment_kb < 0 or args.delay_ms < 0 or args.latency_ms < 0:
        parser.error("--attachment-kb, --delay-ms and --latency-ms cannot be negative")
    known = {key for key, *_ in BACKENDS}
    chosen = [key.strip() for key in args.backends.split(",") if key.strip()]
    unknown = sorted(set(chosen) - known)
    if unknown:
        parser.error(f"unknown backend {unknown[0]!r}; choose from {', '.join(sorted(known))}")
    args.backends = ["stock", *(key for key in chosen if key != "stock")]
    return args


# -- Django ----------------------------------------------------------------------------
def setup_django() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    # Django 6.1 deprecates constructing its SMTP backend directly (mail.mailers is the
    # new way); the benchmark does it on purpose, on every Django line alike.
    warnings.filterwarnings(
        "ignore",
        message="Directly creating EmailBackend instances is deprecated",
        category=PendingDeprecationWarning,
    )
    import django
    from django.conf import settings
    from django.core.management import call_command

    database = Path(settings.DATABASES["default"]["NAME"])
    database.parent.mkdir(parents=True, exist_ok=True)
    for leftover in database.parent.glob(database.name + "*"):  # -journal, -wal
        leftover.unlink()
    django.setup()
    call_command("migrate", verbosity=0)


def create_accounts() -> None:
    from django_multismtp.models import SmtpAccount

    common = {
        "purpose": "system",
        "from_email": "bench@example.com",
        "host": "127.0.0.1",
        "port": 25,
        "security": "none",
        "auth_method": "none",
        "timeout": 30,
    }
    # "one" and "four-*" are always named by a hint (which keeps the message's From):
    # another purpose and From than the pool's, so that mail without hints (From
    # bench@example.com) finds the pool alone, by its From.
    hinted = {**common, "purpose": "customer_service", "from_email": "hinted@example.com"}
    SmtpAccount.objects.create(name="one", max_connections=1, **hinted)
    for index in range(1, 5):
        SmtpAccount.objects.create(name=f"four-{index}", max_connections=4, **hinted)
    for name in POOL:  # same purpose (the default), priority, no site default: a pool
        SmtpAccount.objects.create(name=name, max_connections=4, **common)


def clear_log() -> None:
    """Empty the delivery log, so that every batch starts from the same database."""
    from django_multismtp.models import DeliveryLog

    DeliveryLog.objects.all().delete()


def point_accounts_at(ports: list[int]) -> None:
    from django_multismtp.models import SmtpAccount

    SmtpAccount.objects.filter(name="one").update(port=ports[0])
    for index in range(1, 5):
        SmtpAccount.objects.filter(name=f"four-{index}").update(port=ports[index - 1])
        SmtpAccount.objects.filter(name=POOL[index - 1]).update(port=ports[index - 1])


def build_messages(workload: Workload, backend: str, count: int | None = None) -> list[Any]:
    from django.core.mail import EmailMessage

    count = workload.messages if count is None else count
    rng = random.Random(1)  # the same bytes for every backend and run
    attachment = rng.randbytes(workload.attachment_kb * 1024) if workload.attachment_kb else b""
    messages = []
    for index in range(count):
        message = EmailMessage(
            subject=f"Your order {100000 + index} has shipped",
            body=f"Hello customer {index},\n\n" + BODY_LINE * 20,
            from_email=FROM_EMAIL,
            to=[f"customer{index}@example.net"],
        )
        if attachment:
            message.attach(
                filename=f"invoice-{index}.bin",
                content=attachment,
                mimetype="application/octet-stream",
            )
        if backend == "one":
            message.smtp_account = "one"  # type: ignore[attr-defined]
        elif backend == "four":
            message.smtp_account = f"four-{index % 4 + 1}"  # type: ignore[attr-defined]
        elif backend == "four1":
            message.smtp_account = POOL[index % 4]  # type: ignore[attr-defined]
        # "pool1" and "pool4": no hint at all, as a site sends its mail
        messages.append(message)
    return messages


class BareAiosmtplib:
    """The reference: render each message and send it with aiosmtplib, nothing else.

    As many connections as the four-account case (4 per port), messages dealt round-robin;
    no selection, no database, no log. What a backend built on aiosmtplib's ``sendmail``
    could reach here; ours pipelines on its own reply reader and can go past it.
    """

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports

    def send_messages(self, messages: list[Any]) -> int:
        import asyncio

        connections = len(self.ports) * 4
        shares = [messages[index::connections] for index in range(connections)]

        async def deliver(port: int, share: list[Any]) -> int:
            import aiosmtplib

            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
            await client.connect()
            try:
                for message in share:
                    await client.sendmail(message.from_email, message.recipients(), render(message))
            finally:
                await client.quit()
            return len(share)

        async def deliver_all() -> list[int]:
            return await asyncio.gather(
                *(
                    deliver(self.ports[index % len(self.ports)], share)
                    for index, share in enumerate(shares)
                    if share
                )
            )

        return sum(asyncio.run(deliver_all()))


def render(message: Any) -> bytes:
    """The bytes Django's SMTP backend puts on the wire, on 5.2 and 6.x."""
    import email.policy

    import django

    if django.VERSION >= (6, 0):
        return bytes(message.message(policy=email.policy.SMTP).as_bytes())
    return bytes(message.message().as_bytes(linesep="\r\n"))


def make_backend(backend: str, ports: list[int]) -> Any:
    if backend == "bare":
        return BareAiosmtplib(ports)
    if backend == "stock":
        from django.core.mail.backends.smtp import EmailBackend as StockBackend

        return StockBackend(
            host="127.0.0.1",
            port=ports[0],
            username="",
            password="",
            use_tls=False,
            use_ssl=False,
            timeout=30,
            # Every option given: Django 6.1 reads EMAIL_* for the missing ones, and these
            # settings raise AttributeError when MAILERS is defined.
            ssl_keyfile="",
            ssl_certfile="",
        )
    from django_multismtp.backends import EmailBackend
    from django_multismtp.models import SmtpAccount

    if backend in ("four1", "pool1", "pool4"):  # the pool's connections (outside timing)
        size = 4 if backend == "pool4" else 1
        SmtpAccount.objects.filter(name__in=POOL).update(max_connections=size)
    # As mail.mailers builds it (an alias): Django 6.1 deprecates direct construction.
    return EmailBackend(alias="default")


# -- measuring -------------------------------------------------------------------------
def send(backend: str, messages: list[Any], sink: Sink) -> tuple[float, float]:
    """Send one batch; return (wall seconds, sink CPU seconds). Checks every delivery."""
    connection = make_backend(backend, sink.ports)
    clear_log()
    before = sink.messages()
    cpu_before = sink.cpu_seconds()
    gc.collect()
    started = time.perf_counter()
    sent = connection.send_messages(messages)
    elapsed = time.perf_counter() - started
    cpu = sink.cpu_seconds() - cpu_before
    check_delivered(backend, sent, len(messages), before, sink)
    return elapsed, cpu


def check_delivered(backend: str, sent: int, wanted: int, before: int | None, sink: Sink) -> None:
    if sent != wanted:
        raise RuntimeError(f"{backend}: send_messages() returned {sent}, expected {wanted}")
    after = sink.messages()
    if before is not None and after is not None and after - before != wanted:
        raise RuntimeError(f"{backend}: the sink received {after - before} of {wanted} messages")


def traced_send(backend: str, messages: list[Any], sink: Sink) -> tuple[float, int]:
    """Send one batch with tracemalloc on; return (peak MB, database queries)."""
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    connection = make_backend(backend, sink.ports)
    clear_log()
    before = sink.messages()
    gc.collect()
    tracemalloc.start()
    try:
        with CaptureQueriesContext(db) as queries:
            sent = connection.send_messages(messages)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    check_delivered(backend, sent, len(messages), before, sink)
    return peak / 1024 / 1024, len(queries.captured_queries)


def measure(
    workload: Workload,
    sink: Sink,
    runs: int,
    backends: list[tuple[str, str, int, int]],
    progress: Callable[[str], None],
) -> list[Result]:
    results = {
        key: Result(
            workload=workload.key,
            label=workload.label,
            messages=workload.messages,
            attachment_kb=workload.attachment_kb,
            delay_ms=workload.delay_ms,
            sink_mode=workload.sink,
            backend=key,
            backend_label=label,
            accounts=accounts,
            max_connections=connections,
        )
        for key, label, accounts, connections in backends
    }
    for key in results:  # connect once, import lazily-loaded code, start our loop thread
        send(key, build_messages(workload, key, min(WARMUP_MESSAGES, workload.messages)), sink)
    for run in range(runs):
        for key, result in results.items():
            seconds, cpu = send(key, build_messages(workload, key), sink)
            result.seconds.append(seconds)
            result.sink_cpu.append(cpu)
            progress(
                f"  run {run + 1}/{runs} {result.backend_label:<26} "
                f"{workload.messages / seconds:8.1f} msg/s"
            )
    for key, result in results.items():
        result.peak_mb, result.queries = traced_send(key, build_messages(workload, key), sink)
    stock = results["stock"].rate
    for result in results.values():
        result.ratio = result.rate / stock
    return list(results.values())


def worker_figures(sink: Sink, say: Callable[[str], None]) -> dict[str, Any]:
    """The outbox worker's database work: queries of one drained batch of 10 and of 200
    messages written once at its end, and of 200 settled as the replies arrive
    (``SETTLE_EVERY``): the difference over the number of writes is the cost of one."""
    from django.conf import settings
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext, override_settings

    from django_multismtp import worker
    from django_multismtp.engine import SETTLE_EVERY, SettleEvery

    once = SettleEvery(replies=None, seconds=None)
    figures: dict[str, Any] = {}
    with override_settings(MULTISMTP={**settings.MULTISMTP, "OUTBOX": "always"}):
        for key, size, every in (
            ("warm-up", 2, once),
            ("batch of 10, one write", 10, once),
            ("batch of 200, one write", 200, once),
            ("batch of 200, SETTLE_EVERY", 200, SETTLE_EVERY),
        ):
            make_backend("one", sink.ports).send_messages(
                build_messages(Workload("text", size, 0, 0.0), "one")
            )
            clear_log()
            before = sink.messages()
            started = time.perf_counter()
            with CaptureQueriesContext(db) as queries:
                result = worker.drain(batch_size=size, every=every)
            elapsed = time.perf_counter() - started
            check_delivered("worker", result.sent, size, before, sink)
            if key != "warm-up":
                figures[key] = {"queries": len(queries), "msg_per_s": round(size / elapsed, 1)}
                say(f"  {key:<28} {len(queries):>5} queries {size / elapsed:9.1f} msg/s")
    return figures


# -- reporting -------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import django

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "aiosmtplib": version("aiosmtplib"),
        "aiosmtpd": version("aiosmtpd"),
        "code": code_state(),
    }


def code_state() -> str:
    """The commit, and whether the package has uncommitted changes (work in progress)."""
    git = shutil.which("git")
    if git is None:
        return "unknown (no git)"
    try:
        commit = subprocess.run(
            [git, "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            [git, "status", "--porcelain", "--", "django_multismtp"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    files = sorted({line[3:] for line in changed if line.strip()})
    if not files:
        return f"{commit}, package unmodified"
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return f"{commit} + uncommitted changes in {shown}"


def table(results: list[Result]) -> str:
    """One block per workload and sink delay, one line per backend."""
    header = (
        f"  {'backend':<27}{'conns':>6}{'msg/s':>9}  {'min-max':<11}{'peak MB':>8}"
        f"{'queries':>9}{'sink':>6}{'vs stock':>10}"
    )
    lines: list[str] = []
    previous = None
    for result in results:
        cell = (result.label, result.delay_ms, result.sink_mode)
        if cell != previous:
            delay = SINK_MODES[result.sink_mode].format(delay=result.delay_ms)
            if lines:
                lines.append("")
            lines += [f"{result.label}, {delay}", header]
            previous = cell
        connections = (
            str(result.max_connections)
            if result.accounts <= 1
            else f"{result.accounts}x{result.max_connections}"
        )
        rates = result.rates
        lines.append(
            f"  {result.backend_label:<27}{connections:>6}{result.rate:>9.1f}  "
            f"{f'{min(rates):.0f}-{max(rates):.0f}':<11}"
            f"{result.peak_mb or 0:>8.2f}{result.queries or 0:>9}"
            f"{f'{result.sink_busy:.0%}':>6}{f'{result.ratio or 0:.2f}x':>10}"
        )
    return "\n".join(lines)


def target_lines(results: list[Result]) -> tuple[list[str], list[dict[str, Any]]]:
    lines, verdicts = [], []
    for workload, mode, delay_ms, backend, minimum in TARGETS:
        found = [
            r
            for r in results
            if r.workload == workload
            and r.sink_mode == mode
            and r.attachment_kb == 0
            and r.backend == backend
        ]
        if not found:
            continue
        result = found[0]
        ratio = result.ratio or 0.0
        delay = SINK_MODES[mode].format(delay=result.delay_ms)
        text = f"  {result.backend_label}, {delay}: {ratio:.2f}x stock (target >= {minimum:g}x"
        met: bool | None = ratio >= minimum
        if result.delay_ms != delay_ms:
            met = None  # the target says nothing about another delay
            text += f" at {SINK_MODES[mode].format(delay=delay_ms)}): not judged"
        else:
            text += f"): {'met' if met else 'NOT met'}"
        lines.append(text)
        verdicts.append(
            {
                "workload": workload,
                "sink_mode": mode,
                "delay_ms": result.delay_ms,
                "backend": backend,
                "target": minimum,
                "target_delay_ms": delay_ms,
                "ratio": round(ratio, 3),
                "met": met,
            }
        )
    return lines, verdicts


def profile(workload: Workload, sink: Sink) -> None:
    import cProfile
    import pstats

    for key in ("one", "four"):
        messages = build_messages(workload, key)
        profiler = cProfile.Profile()
        connection = make_backend(key, sink.ports)
        profiler.enable()
        connection.send_messages(messages)
        profiler.disable()
        print(f"\ncProfile, {workload.label}, no delay, {key} (calling thread only):")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)


@contextlib.contextmanager
def sinks(
    kind: str,
    delay_ms: float,
    pipelining: bool,
    every_reply: bool,
    latency_ms: float,
    latency_sink: str = "lean",
) -> Iterator[dict[str, Sink]]:
    """The sinks by mode (see :class:`Workload`)."""
    started: dict[str, Sink] = {}
    try:
        started["none"] = start_sink(kind, 4, 0.0, pipelining)
        if delay_ms:
            mode = "every" if every_reply else "data"
            started[mode] = AiosmtpdSink(4, delay_ms, pipelining, every_reply)
        if latency_ms:
            # The lean sink by default: a model of a server far away should not share
            # the client's two cores (aiosmtpd's own CPU, ~0.7 ms a message, did).
            started["rtt"] = AiosmtpdSink(
                4, latency_ms, pipelining, round_trip=True, lean=latency_sink == "lean"
            )
        yield started
    finally:
        for sink in started.values():
            sink.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.perf_counter()
    setup_django()
    create_accounts()
    info = machine()
    now = dt.datetime.now(dt.UTC)

    def say(text: str) -> None:
        print(text, flush=True)

    say(f"django-multismtp benchmark, {now:%Y-%m-%d %H:%M} UTC")
    say(f"Machine   {info['cpu']}, {info['cores']} cores, {info['platform']}")
    say(
        f"Software  Python {info['python']}, Django {info['django']}, "
        f"aiosmtplib {info['aiosmtplib']}, aiosmtpd {info['aiosmtpd']}"
    )
    say(f"Code      {info['code']}")

    workloads = [Workload("text", args.messages, 0, 0.0)]
    attachments = Workload("attachment", args.attachment_messages, args.attachment_kb, 0.0)
    if args.attachment_kb:
        workloads.append(attachments)
    if args.delay_ms:
        mode = "every" if args.delay_every_reply else "data"
        workloads.append(Workload("text", args.delay_messages, 0, args.delay_ms, mode))
        if args.attachment_kb and args.delay_attachments:
            workloads.append(dataclasses.replace(attachments, delay_ms=args.delay_ms, sink=mode))
    if args.latency_ms:
        workloads.append(Workload("text", args.delay_messages, 0, args.latency_ms, "rtt"))

    backends = [b for b in BACKENDS if b[0] in args.backends] + ([CEILING] if args.ceiling else [])
    results: list[Result] = []
    with sinks(
        args.sink,
        args.delay_ms,
        not args.no_pipelining,
        args.delay_every_reply,
        args.latency_ms,
        args.latency_sink,
    ) as running:
        for sink in running.values():
            say(f"Sink      {sink.describe()}")
        if args.sink == "auto" and not SMTP_SINK.exists():
            say(f"          ({SMTP_SINK} not installed: aiosmtpd sink for both modes)")
        say(
            f"Runs      {args.runs} timed runs per cell (median; runs interleaved), "
            "then 1 traced run (peak memory, queries)"
        )
        say("")
        for workload in workloads:
            sink = running[workload.sink]
            point_accounts_at(sink.ports)
            say(f"{workload.label}, {workload.delay_label}")
            results += measure(workload, sink, args.runs, backends, say)
        drained: dict[str, Any] = {}
        if args.worker:
            point_accounts_at(running["none"].ports)
            say("")
            say("Outbox worker (1 account, 1 connection), no delay")
            drained = worker_figures(running["none"], say)
        flat: dict[str, Any] = {}
        if args.memory_messages > 0:
            from .memory import measure as measure_memory

            say("")
            say(f"Flat memory: {args.memory_messages:,} small messages in one send_messages()")
            flat = measure_memory(args.memory_messages, running["none"], say)
        if args.profile:
            point_accounts_at(running["none"].ports)
            profile(workloads[0], running["none"])

    lines, verdicts = target_lines(results)
    say("")
    say(table(results))
    say("")
    say(
        "conns: accounts x max_connections. msg/s: median of the timed runs. peak MB: "
        "tracemalloc peak\nduring send_messages() (client process). queries: database "
        "queries of one batch. sink: CPU used\nby the sink processes (100% = one core). "
        "vs stock: msg/s divided by the stock backend's."
    )
    say("Targets")
    for line in lines:
        say(line)
    elapsed = time.perf_counter() - began
    say(f"\nTotal time {elapsed:.0f} s")

    if args.json:
        report = {
            "date": now.isoformat(timespec="seconds"),
            "machine": info,
            "sinks": {mode: s.describe() for mode, s in running.items()},
            "arguments": vars(args),
            "results": [result.as_dict() for result in results],
            "worker": drained,
            "memory": flat,
            "targets": verdicts,
            "seconds": round(elapsed, 1),
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        say(f"Results written to {args.json}")
