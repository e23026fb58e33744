"""Child processes that share the test database: workers, Celery, manage.py.

A child runs ``tests.settings_subprocess``: the parent's settings module with the
database NAME pointed at the parent's *test* database, so it sees what a
``transaction=True`` test committed (SQLite file or PostgreSQL alike).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.db import connection

REPO = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_subprocess",
        "MULTISMTP_SUBPROCESS_BASE": os.environ["DJANGO_SETTINGS_MODULE"],
        "MULTISMTP_SUBPROCESS_DB": str(connection.settings_dict["NAME"]),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def start(args: list[str], *, stdin: bool = False, **extra_env: str) -> subprocess.Popen[str]:
    """Start ``python <args>`` in the repository with the child settings."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env=child_env(**extra_env),
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def start_together(children: list[subprocess.Popen[str]]) -> None:
    """Wait until every child printed "ready", then send them all "go" at once, so that
    their work overlaps (children started with ``stdin=True`` that wait for that line)."""
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        assert line == "ready", f"a child did not start: {child.communicate(timeout=60)[1]}"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()


def stop(*children: subprocess.Popen[Any]) -> None:
    """Kill what still runs; reap every child and close its pipes."""
    for child in children:
        if child.poll() is None:
            child.kill()
        if child.returncode is None or any(
            stream is not None and not stream.closed
            for stream in (child.stdin, child.stdout, child.stderr)
        ):
            try:
                child.communicate(timeout=30)
            except ValueError:  # a pipe the test closed itself
                child.wait(timeout=30)


def wait_until(condition: Any, *, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``condition()`` until true: for state another process writes, whose timing we
    do not control (correctness never depends on the interval, only the bound)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(0.02)
