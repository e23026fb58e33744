"""Start the SMTP sinks the benchmark sends to, each in processes of its own.

Two kinds, both plain SMTP on 127.0.0.1, no AUTH, accepting every message:

* :class:`PostfixSink`: Debian Postfix's ``/usr/sbin/smtp-sink`` (C, one process per
  port), used when installed and no delay is asked for (its ``-w`` delay is in whole
  seconds, far too coarse for a 5 ms reply delay);
* :class:`AiosmtpdSink`: ``python -m benchmarks.sink`` (one process serving every port).

Both count the messages they received so the harness can check that every message
arrived, and report the CPU time their processes used, which tells when the sink rather
than the client limits the rate.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

SMTP_SINK = Path("/usr/sbin/smtp-sink")
LOCALHOST = "127.0.0.1"
_ROOT = Path(__file__).resolve().parent.parent


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (0.0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the SMTP sink on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection((LOCALHOST, port), timeout=1) as sock:
                sock.recv(512)  # the greeting; then we hang up
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the SMTP sink on port {port} did not start within {timeout:.0f} s")


class Sink:
    name = ""
    ports: list[int]
    delay_ms: float
    pipelining: bool = True
    every_reply: bool = False
    round_trip: bool = False

    def messages(self) -> int | None:
        """Messages received so far (None when the sink cannot tell)."""
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        which = "every reply" if self.every_reply else "each DATA reply"
        delay = f", {self.delay_ms:g} ms before {which}" if self.delay_ms else ""
        if self.round_trip:
            delay = f", {self.delay_ms:g} ms round trip (before each reply the client awaits)"
        pipelining = "" if self.pipelining else ", PIPELINING not offered"
        return f"{self.name} on 127.0.0.1:{','.join(map(str, self.ports))}{delay}{pipelining}"


class AiosmtpdSink(Sink):
    """``python -m benchmarks.sink``: one process, ``count`` ports, one delay."""

    name = "aiosmtpd sink (benchmarks/sink.py)"

    def __init__(
        self,
        count: int,
        delay_ms: float,
        pipelining: bool = True,
        every_reply: bool = False,
        round_trip: bool = False,
        lean: bool = False,
    ) -> None:
        self.delay_ms = delay_ms
        self.lean = lean
        if lean:
            self.name = "lean asyncio sink (benchmarks/sink.py --lean)"
        self.pipelining = pipelining
        self.every_reply = every_reply
        self.round_trip = round_trip
        command = [sys.executable, "-m", "benchmarks.sink", "--delay-ms", f"{delay_ms:g}"]
        if not pipelining:
            command.append("--no-pipelining")
        if every_reply:
            command.append("--every-reply")
        if round_trip:
            command.append("--round-trip")
        if lean:
            command.append("--lean")
        for _ in range(count):
            command += ["--port", "0"]
        self.process = subprocess.Popen(
            command,
            cwd=_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().split()
        if not ready or ready[0] != "READY":
            self.close()
            raise RuntimeError(f"benchmarks.sink did not start (said {ready!r})")
        self.ports = [int(port) for port in ready[1:]]
        self._lock = threading.Lock()

    def _ask(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        with self._lock:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
            return self.process.stdout.readline()

    def messages(self) -> int | None:
        answer = self._ask("stats").split()
        if not answer or answer[0] != "STATS":
            raise RuntimeError(f"benchmarks.sink answered {answer!r} to 'stats'")
        return int(answer[1])

    def cpu_seconds(self) -> float:
        return _cpu_seconds(self.process.pid)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write("quit\n")
                self.process.stdin.close()
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class PostfixSink(Sink):
    """Postfix's ``smtp-sink``: one process per port, counters read from its ``-c`` output.

    ``-c`` prints ``sess=.. quit=.. mesg=..`` after every message. It goes to a file, read
    only when the harness asks: reading it from a pipe as it comes would cost the client
    process (the one being measured) CPU for every message sent.
    """

    name = "Postfix smtp-sink"
    _MESSAGES = re.compile(rb"mesg=(\d+)")

    def __init__(self, count: int, pipelining: bool = True) -> None:
        self.delay_ms = 0.0
        self.pipelining = pipelining
        self.ports = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self._outputs: list[IO[bytes]] = []
        # As root, smtp-sink refuses to run without dropping privileges (-u).
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        try:
            for _index in range(count):
                port = _free_port()
                output = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
                self._outputs.append(output)
                process = subprocess.Popen(
                    [
                        str(SMTP_SINK),
                        "-c",
                        "-a",
                        *([] if pipelining else ["-p"]),
                        *user,
                        f"{LOCALHOST}:{port}",
                        "256",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.DEVNULL,
                )
                self.processes.append(process)
                _wait_listening(port, process)
                self.ports.append(port)
        except BaseException:
            self.close()
            raise

    def _count(self, output: IO[bytes]) -> int | None:
        """The last ``mesg=N`` in one process's output (None before its first session)."""
        output.seek(0, os.SEEK_END)
        output.seek(max(output.tell() - 256, 0))
        found = self._MESSAGES.findall(output.read())
        return int(found[-1]) if found else None

    def messages(self) -> int | None:
        time.sleep(0.05)  # smtp-sink prints after "."; let the last line reach the file
        counts = [self._count(output) for output in self._outputs]
        if any(count is None for count in counts):
            return None
        return sum(count or 0 for count in counts)

    def cpu_seconds(self) -> float:
        return sum(_cpu_seconds(process.pid) for process in self.processes)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for output in self._outputs:
            output.close()


def start_sink(kind: str, count: int, delay_ms: float, pipelining: bool = True) -> Sink:
    """A sink with ``count`` ports; ``kind`` is ``auto``, ``aiosmtpd`` or ``smtp-sink``.

    Both kinds offer PIPELINING (RFC 2920) unless ``pipelining`` is false.
    """
    use_postfix = kind == "smtp-sink" or (kind == "auto" and SMTP_SINK.exists())
    if use_postfix and not delay_ms:
        if not SMTP_SINK.exists():
            raise RuntimeError(f"{SMTP_SINK} is not installed (Debian package postfix)")
        return PostfixSink(count, pipelining)
    return AiosmtpdSink(count, delay_ms, pipelining)
