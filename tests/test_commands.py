"""``manage.py verify_smtp_accounts`` against real servers on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from django_multismtp import ops
from django_multismtp.management.commands.verify_smtp_accounts import shorten
from django_multismtp.models import DeliveryLog
from django_multismtp.replies import HINTS
from tests.conftest import USERS
from tests.factories import SmtpAccountFactory
from tests.smtp_servers import SMTPTestServer, make_tls_files

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command("verify_smtp_accounts", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def run_failing(*args: str) -> tuple[CommandError, str]:
    stdout = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("verify_smtp_accounts", *args, stdout=stdout, stderr=StringIO())
    return caught.value, stdout.getvalue()


@pytest.fixture
def good(starttls_server):
    return SmtpAccountFactory.for_server(
        starttls_server, name="good", auth_method="auto", username="alice", password=USERS["alice"]
    )


@pytest.fixture
def bad(starttls_server):
    return SmtpAccountFactory.for_server(
        starttls_server,
        name="bad",
        auth_method="auto",
        username="bob",
        password="wrong-password",
        priority=200,
    )


def rows(output: str) -> dict[str, list[str]]:
    """The table as {account: [result, code?, ...]} (header line dropped)."""
    lines = [line.split() for line in output.splitlines() if line.strip()]
    assert lines[0][:3] == ["ACCOUNT", "RESULT", "CODE"]
    return {line[0]: line[1:] for line in lines[1:] if not line[0].endswith(":")}


# -- output --------------------------------------------------------------------------------


def test_table_lists_each_account_as_ok(good, smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="plain", purpose="billing")
    out, _ = run()
    table = rows(out)
    assert set(table) == {"good", "plain"}
    assert table["good"][0] == "ok" and table["plain"][0] == "ok"
    assert "Connected (TLS)" in out and "Connected (plain)" in out
    # Connect, TLS and login only: nothing is sent without --send-test.
    assert DeliveryLog.objects.count() == 0
    good.refresh_from_db()
    assert good.last_success_at is not None and good.last_error == ""


def test_json_output(good, starttls_server):
    out, _ = run("--json")
    (result,) = json.loads(out)
    assert {"account", "ok", "outcome", "code", "reply", "hint", "seconds"} <= set(result)
    assert result["account"] == "good"
    assert result["ok"] is True and result["outcome"] == "ok"
    assert result["hint"] == "" and "Connected (TLS)" in result["reply"]
    assert starttls_server.auth_attempts[-1][1:] == ("alice", True)


def test_json_output_of_a_failure(good, bad):
    error, out = run_failing("--json")
    by_name = {r["account"]: r for r in json.loads(out)}
    assert by_name["good"]["ok"] is True
    assert by_name["bad"]["ok"] is False
    assert by_name["bad"]["outcome"] == "auth_failed"
    assert by_name["bad"]["code"] == 535
    assert by_name["bad"]["hint"] == HINTS["credentials"]
    assert "bad" in str(error)


def test_wrong_password_fails_the_command_and_prints_the_hint(good, bad):
    error, out = run_failing()
    assert error.returncode != 0
    assert str(error) == "1 of 2 account(s) failed: bad."
    table = rows(out)
    assert table["good"][0] == "ok"
    assert table["bad"][:2] == ["auth_failed", "535"]
    assert f"bad: {HINTS['credentials']}" in out
    bad.refresh_from_db()
    assert "535" in bad.last_error and bad.last_error_code == 535


# -- selection -----------------------------------------------------------------------------


def test_names_filter(good, bad):
    out, _ = run("good")
    assert set(rows(out)) == {"good"}


def test_unknown_name_is_an_error(good):
    error, out = run_failing("good", "nope", "missing")
    assert str(error) == "No SMTP account named 'nope', 'missing'."
    assert out == ""  # nothing checked


def test_inactive_accounts_only_when_asked_or_named(good, smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="resting", is_active=False)
    assert set(rows(run()[0])) == {"good"}
    assert set(rows(run("--include-inactive")[0])) == {"good", "resting"}
    assert set(rows(run("resting")[0])) == {"resting"}


def test_purpose_filter(good, smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="invoices", purpose="billing")
    out, _ = run("--purpose", "billing")
    assert set(rows(out)) == {"invoices"}


def test_unknown_purpose_is_an_error(good):
    error, _ = run_failing("--purpose", "marketing")
    assert "'marketing'" in str(error) and "billing" in str(error)


def test_purpose_without_accounts_is_an_error(good):
    error, _ = run_failing("--purpose", "campaigns")
    assert "No SMTP account matches" in str(error)


def test_no_accounts_is_an_error():
    error, _ = run_failing()
    assert "No SMTP account matches" in str(error)


# -- --send-test ---------------------------------------------------------------------------


def test_send_test_delivers_and_logs(good, starttls_server):
    out, _ = run("--send-test", "check@example.com")
    # The server's reply ends the row, after the TLS, AUTH and certificate columns.
    row = rows(out)["good"]
    assert row[0] == "ok" and row[1].startswith("TLSv1") and row[4] == "250"
    (received,) = starttls_server.wait_for(1)
    assert received.rcpt_tos == ["check@example.com"]
    assert received.mail_from == good.from_email
    assert received.login == "alice" and received.tls
    assert "test" in received.message()["Subject"].lower()
    (log,) = DeliveryLog.objects.all()
    assert (log.account_id, log.account_name, log.outcome) == (good.pk, "good", "sent")
    assert log.recipient_count == 1 and log.recipient_domains == "example.com"
    assert log.message_id and log.message_id == received.message()["Message-ID"].strip()


def test_send_test_is_skipped_for_a_failing_account(good, bad, starttls_server):
    run_failing("--send-test", "check@example.com")
    (received,) = starttls_server.wait_for(1)
    assert received.login == "alice"
    assert list(DeliveryLog.objects.values_list("account_name", flat=True)) == ["good"]


@pytest.mark.parametrize("address", ["not-an-address", "a@b@example.com", "x@"])
def test_send_test_needs_a_valid_address(good, starttls_server, address):
    error, out = run_failing("--send-test", address)
    assert "--send-test" in str(error) and repr(address) in str(error)
    assert out == "" and starttls_server.connections == 0


# -- a real process: exit status and stderr ------------------------------------------------


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_subprocess",
        "MULTISMTP_SUBPROCESS_BASE": django_settings.SETTINGS_MODULE,
        "MULTISMTP_SUBPROCESS_DB": str(connection.settings_dict["NAME"]),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", "verify_smtp_accounts", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.django_db(transaction=True)
def test_exit_status_in_a_real_process(good, bad):
    failing = manage("bad")
    assert failing.returncode == 1, failing.stderr
    assert failing.stderr.strip().splitlines() == ["CommandError: 1 of 1 account(s) failed: bad."]
    assert "auth_failed" in failing.stdout and HINTS["credentials"] in failing.stdout

    passing = manage("good")
    assert passing.returncode == 0, passing.stderr
    assert passing.stderr == ""
    assert {name: row[0] for name, row in rows(passing.stdout).items()} == {"good": "ok"}


# -- what the connection is: TLS, certificate, AUTH mechanism -------------------------------


def test_json_reports_tls_certificate_and_auth_mechanism(good, implicit_server, clock):
    SmtpAccountFactory.for_server(
        implicit_server,
        name="smtps",
        auth_method="login",
        username="bob",
        password=USERS["bob"],
    )
    out, _ = run("--json")
    by_name = {r["account"]: r for r in json.loads(out)}
    for name in ("good", "smtps"):
        result = by_name[name]
        assert result["tls_version"] in {"TLSv1.2", "TLSv1.3"}
        assert result["cipher"]
        assert result["certificate_subject"] == "CN=localhost"
        expires = dt.datetime.fromisoformat(result["certificate_expires"])
        assert dt.timedelta(days=29) < expires - clock() < dt.timedelta(days=31)
        assert result["warnings"] == []
    # "auto" picks the best mechanism both sides support; the one used is named.
    assert by_name["good"]["auth_mechanism"] == "CRAM-MD5"
    assert by_name["smtps"]["auth_mechanism"] == "LOGIN"


def test_table_shows_tls_auth_and_certificate_in_short(good):
    out, _ = run()
    line = next(line for line in out.splitlines() if line.startswith("good "))
    assert "/TLS_" in line or "TLSv1.2/" in line
    assert " CRAM-MD5 " in line and "CN=localhost,until=" in line


def test_plain_connection_reports_no_tls(smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="plain")
    out, _ = run("--json")
    (result,) = json.loads(out)
    assert result["tls_version"] == "" and result["certificate_expires"] is None
    assert result["auth_mechanism"] == ""


@pytest.fixture
def expiring_server(tmp_path):  # type: ignore[no-untyped-def]
    tls = make_tls_files(tmp_path / "tls", valid_for=dt.timedelta(days=5))
    with SMTPTestServer(
        mode="starttls", tls=tls, require_starttls=True, users=USERS, auth_required=True
    ) as server:
        yield server


def test_certificate_expiring_within_14_days_is_a_warning(good, expiring_server):
    SmtpAccountFactory.for_server(
        expiring_server, name="expiring", username="alice", password=USERS["alice"]
    )
    error, out = run_failing()
    assert error.returncode == 3
    assert str(error) == "1 of 2 account(s) need attention soon: expiring."
    table = rows(out)
    assert table["good"][0] == "ok" and table["expiring"][0] == "warning"
    assert "expiring: warning: The server certificate expires on" in out
    # It still works: the account's state records a success, not an error.
    error, out = run_failing("--json", "expiring")
    (result,) = json.loads(out)
    assert result["ok"] is True
    (warning,) = result["warnings"]
    assert "expires on" in warning and ("(4.9 days)" in warning or "(5.0 days)" in warning)


def test_a_certificate_far_from_expiry_becomes_a_warning_as_time_passes(good, clock):
    assert rows(run()[0])["good"][0] == "ok"
    clock.advance(days=20)  # the test certificate is valid for 30 days
    error, out = run_failing()
    assert error.returncode == 3 and rows(out)["good"][0] == "warning"


# -- each failure once, replies cut between words -------------------------------------------


def test_a_failure_is_reported_once_not_also_as_a_log_line(good, bad, caplog):
    caplog.set_level(logging.WARNING, logger="django_multismtp")
    error, out = run_failing()
    assert out.count(HINTS["credentials"]) == 1
    assert [r for r in caplog.records if "bad" in r.getMessage()] == []
    assert str(error) == "1 of 2 account(s) failed: bad."
    # Outside the command the backend still logs the failure.
    caplog.clear()
    ops.test_connection(bad)
    assert any("'bad'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("reply", "shown"),
    [
        ("5.7.8 Auth failed", "5.7.8 Auth failed"),
        ("5.7.8 Username and Password not accepted", "5.7.8 Username and\u2026"),
        ("5.7.8 Username-and-Password-not-accepted", "5.7.8\u2026"),
        ("5.7.8 Username   and", "5.7.8 Username and"),
    ],
)
def test_a_long_reply_is_cut_between_words_with_an_ellipsis(reply, shown):
    assert shorten(reply, 20) == shown
    assert len(shorten(reply, 20)) <= 20
