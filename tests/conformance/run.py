"""Run Django's own SMTP backend tests, unmodified, against our backend.

The README promises that with no matching account ``django_multismtp.backends.EmailBackend``
is a drop-in replacement for Django's SMTP backend. This checks it with Django's own
test-suite for that backend, taken from the sdist of the installed Django version (the
test files are not in the wheel), run by Django's own test runner:

1. ``pip download --no-deps --no-binary :all: Django==<installed>`` into a cache directory
   (reused: ``MULTISMTP_CONFORMANCE_CACHE``, else ``~/.cache/django-multismtp/conformance``)
   and extract ``tests/mail/`` from it.
2. Import Django's test module (``mail/tests.py`` on 5.2 and 6.0, ``mail/test_backends.py``
   on 6.1) and point it at our backend without editing a file: the classes' backend
   setting (``email_backend`` / ``backend_class``), the ``smtp`` name the tests construct
   ``smtp.EmailBackend`` through, and the stock dotted path itself (a test asks
   ``get_connection("django.core.mail.backends.smtp.EmailBackend")``). The classes may use
   the database (``databases``): our backend looks for accounts there, and finds none.
3. Run ``SMTPBackendTests`` and ``SMTPBackendStoppedServerTests`` with Django's
   ``DiscoverRunner``, deprecation warnings as errors as in Django's ``runtests.py``.
4. Compare with ``expected_failures.txt``: any other failure fails the run, and so does a
   listed test that passes (remove it from the list), or a run with no test.

Only loopback hosts can be resolved while the tests run: a test that names
``mail.example.com`` gets a resolution error instead of a connection to the internet.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import types
import unittest
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OURS = "django_multismtp.backends.EmailBackend"
CLASSES = ("SMTPBackendTests", "SMTPBackendStoppedServerTests")
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def cache_dir() -> Path:
    configured = os.environ.get("MULTISMTP_CONFORMANCE_CACHE")
    folder = (
        Path(configured)
        if configured
        else Path.home() / ".cache" / "django-multismtp" / "conformance"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def django_tests(version: str) -> Path:
    """The ``tests`` folder of Django ``version``'s sdist (only ``tests/mail`` extracted)."""
    cache = cache_dir()
    target = cache / f"django-{version}"
    if (target / "tests" / "mail" / "__init__.py").exists():
        return target / "tests"
    archives = sorted(cache.glob(f"[Dd]jango-{version}.tar.gz"))
    if not archives:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"Django=={version}",
                "--dest",
                str(cache),
            ],
            check=True,
        )
        archives = sorted(cache.glob(f"[Dd]jango-{version}.tar.gz"))
    if not archives:
        raise SystemExit(f"pip downloaded no sdist of Django {version} into {cache}")
    with tarfile.open(archives[0]) as archive:
        members = [
            member
            for member in archive.getmembers()
            if member.name.split("/")[1:3] == ["tests", "mail"]
        ]
        partial = cache / f".partial-{version}-{os.getpid()}"
        archive.extractall(partial, members=members, filter="data")
    # Extracted aside, then renamed: a parallel run never sees a half-written folder.
    extracted = next(partial.iterdir())
    try:
        extracted.rename(target)
    except OSError:
        if not target.exists():
            raise
    shutil.rmtree(partial, ignore_errors=True)
    return target / "tests"


def expected_failures(line: str) -> dict[str, str]:
    """``{test method: reason}`` listed for Django ``line`` ("5.2", "6.0", "6.1")."""
    expected = {}
    for raw in (HERE / "expected_failures.txt").read_text().splitlines():
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        lines, name, reason = (text.split(None, 2) + [""])[:3]
        if not reason:
            raise SystemExit(f"expected_failures.txt: no reason given for {name}")
        if line in lines.split(","):
            expected[name] = reason
    return expected


def loopback_only() -> None:
    """Refuse to resolve anything but loopback: no test may reach another machine."""
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in LOOPBACK_NAMES:
            try:
                loopback = ipaddress.ip_address(name).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise socket.gaierror(
                    socket.EAI_NONAME, f"{name}: only loopback hosts in the conformance run"
                )
        return original(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


def point_at_ours(module: types.ModuleType, ours: type) -> None:
    """Make Django's test module exercise ``ours`` wherever it uses the stock backend."""
    import django.core.mail.backends.smtp as stock

    proxy = types.ModuleType(stock.__name__)
    proxy.__dict__.update(stock.__dict__)
    proxy.EmailBackend = ours  # type: ignore[attr-defined]
    module.smtp = proxy  # type: ignore[attr-defined]
    stock.EmailBackend = ours  # type: ignore[attr-defined]  # the dotted path, for get_connection()
    for name in CLASSES:
        cls = getattr(module, name)
        cls.databases = {"default"}
        if "email_backend" in cls.__dict__:
            cls.email_backend = OURS
        if "backend_class" in cls.__dict__:
            cls.backend_class = ours


def method_of(test: Any) -> str:
    case = getattr(test, "test_case", test)  # a failed subTest reports a _SubTest
    return str(getattr(case, "_testMethodName", test))


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.conformance.settings"
    import django

    line = ".".join(str(part) for part in django.VERSION[:2])
    tests_dir = django_tests(django.get_version())
    sys.path.insert(0, str(tests_dir))
    from django.utils.deprecation import (
        RemovedAfterNextVersionWarning,
        RemovedInNextVersionWarning,
    )

    # As Django's runtests.py: deprecations, resource leaks and runtime warnings fail.
    warnings.simplefilter("error", RemovedInNextVersionWarning)
    warnings.simplefilter("error", RemovedAfterNextVersionWarning)
    warnings.simplefilter("error", ResourceWarning)
    warnings.simplefilter("error", RuntimeWarning)
    django.setup()
    loopback_only()

    from django.test.runner import DiscoverRunner
    from django.utils.module_loading import import_string

    module_name = "mail.test_backends" if django.VERSION >= (6, 1) else "mail.tests"
    module = importlib.import_module(module_name)
    point_at_ours(module, import_string(OURS))

    class Runner(DiscoverRunner):
        result: unittest.TestResult | None = None

        def run_suite(self, suite: Any, **kwargs: Any) -> Any:
            self.result = super().run_suite(suite, **kwargs)
            return self.result

    runner = Runner(verbosity=2, interactive=False)
    runner.run_tests([f"{module_name}.{name}" for name in CLASSES])
    result = runner.result
    assert result is not None

    failed = {method_of(test) for test, _ in result.failures + result.errors}
    failed |= {method_of(test) for test in result.unexpectedSuccesses}
    skipped = {method_of(test) for test, _ in result.skipped}
    ran = result.testsRun
    expected = expected_failures(line)
    unexpected = sorted(failed - set(expected))
    now_passing = sorted(set(expected) - failed - skipped)
    passed = ran - len(failed) - len(skipped)

    print(f"\nDjango {django.get_version()} SMTP backend tests against {OURS}:")
    for name in sorted(failed & set(expected)):
        print(f"  expected failure {name}: {expected[name]}")
    for name in unexpected:
        print(f"  FAILED {name} (not in tests/conformance/expected_failures.txt)")
    for name in now_passing:
        print(f"  PASSES NOW {name}: remove it from tests/conformance/expected_failures.txt")
    for name in sorted(skipped):
        print(f"  SKIPPED {name}")
    if ran == 0 or passed == 0:
        print("conformance: no test ran")
        return 1
    # Listed failures are expected (like pytest's xfail), so the closing line counts as
    # failed only what fails the run: unexpected failures and listed tests now passing.
    print(f"{len(failed & set(expected))} listed failures as expected")
    verdict_failed = len(unexpected) + len(now_passing)
    print(f"conformance: {passed} passed, {verdict_failed} failed, {len(skipped)} skipped")
    return 1 if unexpected or now_passing or skipped else 0


if __name__ == "__main__":
    sys.exit(main())
