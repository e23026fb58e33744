"""Flat memory: peak memory and SQL statements of one long ``send_messages()`` call.

``python -m benchmarks.memory`` (and ``python -m benchmarks``, after its tables, unless
``--memory-messages 0``) sends ``--memory-messages`` small messages (100,000) in ONE
``send_messages()`` call, as a site's mass mailing does, through the four accounts of
the pool (no hints, 4 connections each) to a sink that answers at once, and prints:

* the memory of the messages themselves (tracemalloc, while building them);
* the tracemalloc peak during the call, over what was allocated before it (the
  messages): the engine's bookkeeping, which slicing (``SEND_SLICE``) keeps flat;
* the RSS high-water mark during an untraced call over the RSS before it (Linux:
  ``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``);
* the SQL statements of 1 slice and of the whole batch, and so per further slice
  (counted with an execute wrapper: capturing 100 bulk inserts' SQL would itself cost
  memory).

The target of issue 16 is a peak within +64 MB of the messages themselves. What is
left after the call (each message's ``multismtp_status``) is part of what is counted.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .run import POOL, clear_log, create_accounts, point_accounts_at, setup_django
from .sinks import Sink, start_sink

TARGET_MB = 64.0
MB = 1024 * 1024


def small_messages(count: int) -> list[Any]:
    from django.core.mail import EmailMessage

    return [
        EmailMessage(
            subject=f"Code {index}",
            body=f"Your code is {index:06d}.\n",
            from_email="Benchmark <bench@example.com>",
            to=[f"customer{index}@example.net"],
        )
        for index in range(count)
    ]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def counting_statements() -> Iterator[list[int]]:
    from django.db import connection

    counter = [0]

    def count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        counter[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        yield counter


def send_batch(messages: list[Any], sink: Sink) -> int:
    from django_multismtp.backends import EmailBackend
    from django_multismtp.models import SmtpAccount

    SmtpAccount.objects.filter(name__in=POOL).update(max_connections=4)
    clear_log()
    before = sink.messages()
    sent = int(EmailBackend(alias="default").send_messages(messages))
    after = sink.messages()
    if sent != len(messages) or (
        before is not None and after is not None and after - before != len(messages)
    ):
        raise RuntimeError(f"sent {sent}, the sink received {after} - {before}, of {len(messages)}")
    return sent


def measure(count: int, sink: Sink, say: Callable[[str], None]) -> dict[str, Any]:
    from django_multismtp import conf

    slice_size = conf.send_slice()
    point_accounts_at(sink.ports)
    send_batch(small_messages(10), sink)  # warm-up: connections, slots, imports

    # SQL statements: one slice, then the whole batch.
    with counting_statements() as one:
        send_batch(small_messages(slice_size), sink)
    messages = small_messages(count)
    slices = -(-count // slice_size)
    with counting_statements() as whole:
        started = time.perf_counter()
        send_batch(messages, sink)
        seconds = time.perf_counter() - started
    per_slice = (whole[0] - one[0]) / max(slices - 1, 1)
    say(
        f"  SQL statements: {one[0]} for 1 slice of {slice_size:,}, {whole[0]} for "
        f"{count:,} messages ({slices} slices): {per_slice:g} per further slice"
    )
    say(f"  untraced send: {seconds:.1f} s, {count / seconds:,.0f} msg/s")
    del messages
    gc.collect()

    # RSS: an untraced call, high-water mark over the level once the messages exist.
    messages = small_messages(count)
    gc.collect()
    rss_before = _status_kb("VmRSS")
    reset = _reset_high_water_mark()
    send_batch(messages, sink)
    rss_peak = _status_kb("VmHWM") if reset else 0
    rss_mb = (rss_peak - rss_before) / 1024 if reset else float("nan")
    del messages
    gc.collect()

    # tracemalloc: the messages themselves, then the peak of the call over them.
    tracemalloc.start()
    messages = small_messages(count)
    gc.collect()
    own = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    send_batch(messages, sink)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    over = (peak - own) / MB
    left = (current - own) / MB
    say(f"  the {count:,} messages themselves: {own / MB:.1f} MB (tracemalloc)")
    say(
        f"  peak during send_messages(): +{over:.1f} MB over them (tracemalloc; "
        f"+{left:.1f} MB still held after it, mostly each message's multismtp_status)"
    )
    if reset:
        say(f"  RSS high-water mark during an untraced call: +{rss_mb:.1f} MB over the RSS before")
    met = over <= TARGET_MB and (not reset or rss_mb <= TARGET_MB)
    say(
        f"  target: peak <= +{TARGET_MB:g} MB: "
        + ("met" if met else "NOT met")
        + f" (tracemalloc +{over:.1f} MB"
        + (f", RSS +{rss_mb:.1f} MB)" if reset else ")")
    )
    return {
        "messages": count,
        "slice": slice_size,
        "statements_one_slice": one[0],
        "statements_batch": whole[0],
        "statements_per_further_slice": per_slice,
        "messages_mb": round(own / MB, 1),
        "peak_over_messages_mb": round(over, 1),
        "held_after_mb": round(left, 1),
        "rss_peak_over_mb": round(rss_mb, 1) if reset else None,
        "msg_per_s_untraced": round(count / seconds, 1),
        "target_met": met,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000, help="(100000)")
    parser.add_argument("--sink", choices=["auto", "aiosmtpd", "smtp-sink"], default="auto")
    args = parser.parse_args(argv)
    setup_django()
    create_accounts()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1, 5 min)", flush=True)
    sink = start_sink(args.sink, 4, 0.0)
    try:
        print(f"Flat memory: {args.messages:,} small messages in one send_messages()", flush=True)
        measure(args.messages, sink, lambda text: print(text, flush=True))
    finally:
        sink.close()


if __name__ == "__main__":
    main()
