"""Shared fixtures: real SMTP servers on 127.0.0.1, a controllable clock, our mailer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_multismtp import parking, pools
from django_multismtp.clock import FrozenClock, use_clock
from tests.mailers import use_mailers
from tests.smtp_servers import SMTPTestServer, TLSFiles, make_tls_files

USERS = {"alice": "right-password", "bob": "bob-password"}

logging.getLogger("mail.log").setLevel(logging.ERROR)


@pytest.fixture(autouse=True)
def fresh_pool_rotation() -> Iterator[None]:
    """Every test starts each pool at its first account (see django_multismtp.pools):
    the rotation is per process, and primary keys repeat from test to test."""
    pools.reset()
    yield
    pools.reset()


@pytest.fixture(autouse=True)
def no_parked_backends(django_db_blocker: Any) -> Iterator[None]:
    """Backends parked by a test's async calls (django_multismtp.parking) are closed
    after it: the next test has other servers and other rows."""
    yield
    if len(parking.park):
        with django_db_blocker.unblock():
            parking.park.close_all()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_server() -> Iterator[SMTPTestServer]:
    """Plain SMTP, no AUTH: the simplest sink."""
    with SMTPTestServer(mode="plain") as server:
        yield server


@pytest.fixture
def second_server() -> Iterator[SMTPTestServer]:
    with SMTPTestServer(mode="plain") as server:
        yield server


@pytest.fixture
def starttls_server(tls_files: TLSFiles) -> Iterator[SMTPTestServer]:
    """STARTTLS required before AUTH and MAIL, with PLAIN/LOGIN/CRAM-MD5 logins."""
    with SMTPTestServer(
        mode="starttls", tls=tls_files, require_starttls=True, users=USERS, auth_required=True
    ) as server:
        yield server


@pytest.fixture
def implicit_server(tls_files: TLSFiles) -> Iterator[SMTPTestServer]:
    with SMTPTestServer(mode="implicit", tls=tls_files, users=USERS, auth_required=True) as server:
        yield server


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    frozen = FrozenClock()
    with use_clock(frozen):
        yield frozen


@pytest.fixture
def shared_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Any]]:
    """One time for this test and the processes it starts: a file they all read
    (``MULTISMTP_TEST_CLOCK_FILE``); move it with ``tests.clocks.set_time``."""
    from django.utils import timezone

    from django_multismtp import clock as multismtp_clock
    from tests.clocks import file_clock, set_time

    path = tmp_path / "now.txt"
    start_time = timezone.now().replace(microsecond=0)
    set_time(path, start_time)
    monkeypatch.setenv("MULTISMTP_TEST_CLOCK_FILE", str(path))
    with multismtp_clock.use_clock(file_clock):
        yield path, start_time


@pytest.fixture
def mailer(settings) -> None:  # type: ignore[no-untyped-def]
    """Make our backend the default mailer (the test runner installs locmem)."""
    use_mailers(settings)


@pytest.fixture
def outbox_off(settings) -> None:  # type: ignore[no-untyped-def]
    """Failures raise instead of being queued (MULTISMTP["OUTBOX"] = "off"), for tests
    of the error a caller sees, as on a site that turned the outbox off."""
    settings.MULTISMTP = {**getattr(settings, "MULTISMTP", {}), "OUTBOX": "off"}


#: Fixtures through which a test reaches the database (pytest-django's).
DATABASE_FIXTURES = frozenset(
    {"db", "transactional_db", "django_db_reset_sequences", "live_server"}
)


def uses_database(item: pytest.Item) -> bool:
    return item.get_closest_marker("django_db") is not None or bool(
        DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgresql`` run in the suite's PostgreSQL pass only; that pass
    leaves out what it could not tell apart from the SQLite pass.

    pytest-django refuses database access to a test that asks for none, so a test
    without a ``django_db`` mark or database fixture runs the same on any database:
    the protocol, parsing and network guards. The browser tests drive templates and
    scripts whose queries ``test_admin`` and ``test_self_service`` already run on
    PostgreSQL. Both run once, in the SQLite pass, as do tests marked ``sqlite_only``
    (variants whose database work a sibling repeats on PostgreSQL)."""
    from django.conf import settings

    if "postgresql" in settings.DATABASES["default"]["ENGINE"]:
        kept, left_out = [], []
        for item in items:
            same_anywhere = (
                not uses_database(item)
                or item.get_closest_marker("browser")
                or item.get_closest_marker("sqlite_only")
            )
            (left_out if same_anywhere else kept).append(item)
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = kept
        return
    skip = pytest.mark.skip(reason="a PostgreSQL race: runs with --ds=tests.settings_pg")
    for item in items:
        if item.get_closest_marker("postgresql"):
            item.add_marker(skip)
