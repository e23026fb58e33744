"""Mutation testing with mutmut, one module at a time against its own tests.

mutmut changes one thing in the code (``<`` to ``<=``, ``and`` to ``or``, a constant,
a dropped argument...) and runs the tests; a change that no test notices is a
*survivor*: a rule the suite would let break. Each module is mapped to the test files
that exercise it (``TARGETS``), so a run takes minutes, not the whole suite per mutant.
Mutants that cannot change any behaviour are listed with a reason in
``mutation/equivalents.toml`` and left out of the score.

mutmut reads its settings from ``pyproject.toml`` in the directory it runs in, so every
module gets a work directory under ``.mutate/<name>/`` with links to the package and
the tests and a ``pyproject.toml`` that adds the module's ``[tool.mutmut]`` section.
The tests import the package from that directory (pytest's ``pythonpath = ["."]``),
where mutmut writes the mutated copy.

Usage: ``python -m mutation [--again] [--jobs N] [NAME ...]`` (all targets when none
is named; ``--jobs`` mutants at once, one by default, each at ``nice -n 19``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".mutate"
EQUIVALENTS = Path(__file__).resolve().parent / "equivalents.toml"


@dataclass(frozen=True)
class Target:
    module: str
    tests: tuple[str, ...]
    #: mutmut name patterns when only part of the module is tested here.
    only: tuple[str, ...] = ()
    #: Tests left out of the mutation run: too slow to repeat for every mutant.
    deselect: tuple[str, ...] = ()


TARGETS: dict[str, Target] = {
    "selection": Target(
        "selection", ("tests/test_selection.py", "tests/test_selection_mutants.py")
    ),
    "limits": Target(
        "limits",
        ("tests/test_limits.py", "tests/test_limits_mutants.py"),
        # Two processes racing for 30 s under load; the PostgreSQL race test in
        # test_limits_mutants.py covers the same rule (run it with --ds=tests.settings_pg).
        deselect=("tests/test_limits.py::test_limit_holds_across_processes",),
    ),
    "netguard": Target("netguard", ("tests/test_netguard.py",)),
    "throttling": Target("throttling", ("tests/test_throttling.py",)),
    "addresses": Target("addresses", ("tests/test_addresses.py",)),
    # Only the scheduling functions: backoff and the next attempt's time.
    "outbox": Target(
        "outbox",
        ("tests/test_outbox.py",),
        only=(
            "django_multismtp.outbox.x_retry_delay__mutmut_*",
            "django_multismtp.outbox.x_next_attempt__mutmut_*",
        ),
    ),
    "replies": Target("replies", ("tests/test_replies.py",)),
    # Only the reply parser.
    "pipelining": Target(
        "pipelining",
        ("tests/test_pipelining.py",),
        only=("django_multismtp.pipelining.x*ReplyReader*__mutmut_*",),
    ),
}

KILLED = {"killed", "timeout", "segfault", "caught by type check", "suspicious"}


@dataclass
class Result:
    name: str
    total: int = 0
    killed: int = 0
    equivalent: int = 0
    survivors: list[tuple[str, str]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    #: Of the killed: cut off by the time limit (a loop, or a very slow run).
    timeouts: int = 0
    seconds: float = 0.0

    @property
    def score(self) -> float:
        counted = self.total - self.equivalent
        return 100.0 * self.killed / counted if counted else 100.0


def load_equivalents() -> dict[str, dict[str, str]]:
    data = tomllib.loads(EQUIVALENTS.read_text("utf-8"))
    return {entry["mutant"]: entry for entry in data.get("equivalent", [])}


def prepare(target: Target, work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "django_multismtp").symlink_to(ROOT / "django_multismtp")
    (work / "tests").symlink_to(ROOT / "tests")
    write_settings(target, work)


def write_settings(target: Target, work: Path) -> None:
    """``pyproject.toml`` with the module's ``[tool.mutmut]`` section (written again by
    ``--again``: a changed timeout makes mutmut forget its time-outs, as it should)."""
    section = {
        "source_paths": ["django_multismtp"],
        "only_mutate": [f"django_multismtp/{target.module}.py"],
        "pytest_add_cli_args_test_selection": list(target.tests),
        "pytest_add_cli_args": [
            "-q",
            "-p",
            "no:randomly",
            *(arg for test in target.deselect for arg in ("--deselect", test)),
        ],
        # Forking after the tests ran would leave thread pools (the form's resolver)
        # without their threads: fork every mutant from a server that only collected.
        "process_isolation": "forkserver",
        # A mutant that loops forever (limits' reservation loop) is cut off at five
        # times its tests' clean run rather than mutmut's fifteen, plus a fixed
        # allowance: tests that take milliseconds would otherwise get about five
        # seconds, which a loaded shared machine (at nice 19) exceeds without any loop.
        "timeout_multiplier": 5.0,
        "timeout_constant": 6.0,
    }
    lines = ["", "[tool.mutmut]"] + [
        f"{key} = {json.dumps(value)}" for key, value in section.items()
    ]
    (work / "pyproject.toml").write_text(
        (ROOT / "pyproject.toml").read_text("utf-8") + "\n".join(lines) + "\n", "utf-8"
    )


def mutmut(work: Path, *args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MULTISMTP_TEST_DB_SUFFIX": f"mutate_{work.name}"}
    command = ["nice", "-n", "19", sys.executable, "-m", "mutmut", *args]
    if log is None:
        return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    with log.open("w") as out:
        return subprocess.run(
            command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )


def changed_line(diff: str) -> str:
    """The mutated line (the first ``+`` line of mutmut's diff), stripped."""
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            return line[1:].strip()
    return ""


def run_target(
    name: str,
    target: Target,
    equivalents: dict[str, dict[str, str]],
    *,
    again: bool,
    jobs: int = 1,
) -> Result:
    from mutmut.stats import status_by_exit_code  # installed by `make mutate`

    work = WORK / name
    meta = work / "mutants" / "django_multismtp" / f"{target.module}.py.meta"
    selection = list(target.only)
    if again and meta.exists():
        # Tests were added since the last run, the module was not changed: what was
        # killed stays killed, so only the survivors are run again, and the time-outs
        # (on a loaded machine a slow run is not always a loop; they are confirmed).
        codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        selection = [
            mutant
            for mutant, code in codes.items()
            if (status_by_exit_code[code] not in KILLED or status_by_exit_code[code] == "timeout")
            and (not target.only or any(_matches(mutant, p) for p in target.only))
        ]
        if not selection:
            selection = list(target.only)
        write_settings(target, work)
    else:
        prepare(target, work)
    started = time.monotonic()
    run = mutmut(work, "run", "--max-children", str(jobs), *selection, log=work / "run.log")
    result = Result(name, seconds=time.monotonic() - started)
    if run.returncode != 0 or not meta.exists():
        sys.exit(f"mutmut failed for {name}: see {work / 'run.log'}")

    codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
    for mutant, code in sorted(codes.items(), key=lambda item: _natural(item[0])):
        if target.only and not any(_matches(mutant, pattern) for pattern in target.only):
            continue
        result.total += 1
        status = status_by_exit_code[code]
        known = equivalents.get(mutant)
        # A listed mutant is checked first: an equivalent one that timed out (a slow
        # run on a loaded machine) was not killed, and must not count as killed.
        diff = mutmut(work, "show", mutant).stdout if known or status not in KILLED else ""
        if known is not None and known["line"] == changed_line(diff):
            if known.get("kind") == "postgresql":
                # Killed by a test of the PostgreSQL pass (mutmut runs on SQLite).
                result.killed += 1
            else:
                result.equivalent += 1
            continue
        if known is not None:
            result.stale.append(mutant)
        if status in KILLED:
            result.killed += 1
            if status == "timeout":
                result.timeouts += 1
            continue
        result.survivors.append((f"{mutant} ({status})", diff))
    return result


def _matches(mutant: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(mutant, pattern)


def _natural(key: str) -> tuple[str, int]:
    match = re.match(r"(.*?)(\d+)$", key)
    return (match.group(1), int(match.group(2))) if match else (key, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mutation", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(TARGETS))
    parser.add_argument(
        "--again",
        action="store_true",
        help="after adding tests (the module unchanged): run only the last run's survivors "
        "and the mutants it cut off",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="mutants tested at once (mutmut's --max-children; default 1): the machine is "
        "shared, every worker runs at nice 19 but still takes a core",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    names = args.names or list(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    equivalents = load_equivalents()
    results = []
    for name in names:
        print(f"== {name}: mutmut against {', '.join(TARGETS[name].tests)}", flush=True)
        result = run_target(name, TARGETS[name], equivalents, again=args.again, jobs=args.jobs)
        results.append(result)
        print(f"   {result.score:.1f}% in {result.seconds:.0f} s", flush=True)
    print()
    print(
        f"{'module':<12} {'mutants':>7} {'killed':>6} {'(time-out)':>10} {'equiv.':>6} "
        f"{'survived':>8} {'score':>7}"
    )
    for r in results:
        print(
            f"{r.name:<12} {r.total:>7} {r.killed:>6} {r.timeouts:>10} {r.equivalent:>6} "
            f"{len(r.survivors):>8} {r.score:>6.1f}%"
        )
    for r in results:
        for mutant in r.stale:
            print(f"\n{mutant}: listed as equivalent, but the mutated line changed; check it")
        for title, diff in r.survivors:
            print(f"\n-- survived: {title}")
            print(diff.split("\n", 1)[-1].rstrip())
    summary = {r.name: {**r.__dict__, "score": round(r.score, 1)} for r in results}
    (WORK / "summary.json").write_text(json.dumps(summary, indent=2, default=str), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
