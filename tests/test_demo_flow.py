"""The newcomer's flow in `make demo`, against the demo's own SMTP sink.

Create an account in the admin pointing at the sink's open port, test the connection
(good and wrong password), send the confirmation code, read it from the sink's log (as
the demo's /sink/ page does) and confirm it: the account ends up verified. "My SMTP
settings" is reachable in the demo and accepts the sink's 127.0.0.1. A second
``manage.py demo`` leaves a running one alone.
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

EXAMPLE_PROJECT = Path(__file__).resolve().parent.parent / "example_project"
sys.path.insert(0, str(EXAMPLE_PROJECT))

from demo_site.demo_data import OPEN_MAILBOX, OPEN_PASSWORD, mailboxes  # noqa: E402
from demo_site.sink import Sink, free_port, read_log  # noqa: E402

from django_multismtp.models import SmtpAccount  # noqa: E402
from tests import processes  # noqa: E402
from tests.factories import UserFactory  # noqa: E402

CHANGELIST = "/admin/django_multismtp/smtpaccount/"


@pytest.fixture
def sink(tmp_path):
    with Sink(mailboxes(), tmp_path / "sink.jsonl", echo=lambda line: None, base_port=None) as s:
        yield s


def add_account(client, sink, name, password):
    data = {
        "name": name,
        "purpose": "system",
        "priority": "100",
        "from_email": "newcomer@demo.test",
        "host": "127.0.0.1",
        "port": str(sink.port_of(OPEN_MAILBOX)),
        "security": "none",
        "verify_certificates": "on",
        "timeout": "10",
        "auth_method": "login",
        "username": "newcomer",
        "password": password,
        "max_connections": "1",
        "is_active": "on",
    }
    response = client.post(CHANGELIST + "add/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    return SmtpAccount.objects.get(name=name)


@pytest.mark.django_db
def test_create_test_send_code_and_confirm_against_the_demo_sink(admin_client, sink):
    cache.clear()
    good = add_account(admin_client, sink, "Mine", OPEN_PASSWORD)
    bad = add_account(admin_client, sink, "Typo", "not-the-password")

    page = admin_client.post(
        CHANGELIST, {"action": "test_connection", "_selected_action": [good.pk, bad.pk]}
    ).content.decode()
    assert re.search(r"<td>Mine</td>\s*<td><strong[^>]*>OK</strong>", page)
    assert "App Password" in page  # the wrong password's hint

    response = admin_client.post(
        CHANGELIST,
        {
            "action": "send_test_email",
            "_selected_action": [good.pk],
            "post": "yes",
            "recipient": "me@demo.test",
        },
    )
    assert response.status_code == 302
    (entry,) = read_log(sink.log_path)
    assert entry["login"] == "newcomer" and entry["port"] == sink.port_of(OPEN_MAILBOX)
    code = entry["subject"].rsplit(":", 1)[1].strip()

    confirm = admin_client.post(response["Location"], {"code": code})
    assert confirm.status_code == 302
    good.refresh_from_db()
    assert good.verified_at is not None
    changelist = admin_client.get(CHANGELIST).content.decode()
    assert "multismtp-status-verified" in changelist


# -- "My SMTP settings" in the demo ------------------------------------------------------


def demo_multismtp_settings(monkeypatch, tmp_path):
    """The demo settings' MULTISMTP (imported with DEMO_DIR in tmp_path: the module makes it)."""
    monkeypatch.setenv("DEMO_DIR", str(tmp_path))
    from demo_site import settings as demo_settings

    return demo_settings.MULTISMTP


def my_settings_data(port: int) -> dict[str, str]:
    return {
        "preset": "",
        "from_email": "sam@demo.test",
        "from_name": "Sam",
        "reply_to": "",
        "host": "127.0.0.1",
        "port": str(port),
        "security": "none",
        "verify_certificates": "on",
        "auth_method": "login",
        "username": "sam",
        "password": OPEN_PASSWORD,
    }


@pytest.mark.django_db
def test_the_demo_serves_my_smtp_settings_and_accepts_its_sink(
    settings, monkeypatch, tmp_path, sink
):
    settings.ROOT_URLCONF = "demo_site.urls"
    settings.MULTISMTP = demo_multismtp_settings(monkeypatch, tmp_path)
    # The send page's templates (demo_site is not an installed app of the test settings).
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [EXAMPLE_PROJECT / "demo_site" / "templates"]}
    ]
    cache.clear()
    staff = Client()
    staff.force_login(UserFactory(username="sam", is_staff=True))

    home = staff.get("/").content.decode()
    assert 'href="/smtp/"' in home and "My SMTP settings" in home
    assert staff.get("/smtp/").status_code == 200

    response = staff.post("/smtp/", my_settings_data(sink.port_of(OPEN_MAILBOX)))
    assert response.status_code == 302, response.content.decode()[:3000]
    account = SmtpAccount.objects.get(owner__username="sam")
    assert (account.host, account.port) == ("127.0.0.1", sink.port_of(OPEN_MAILBOX))
    tested = staff.post(f"/smtp/{account.pk}/test/", follow=True).content.decode()
    assert "The settings work" in tested


@pytest.mark.django_db
def test_the_test_settings_still_refuse_the_sink_host(sink):
    cache.clear()
    staff = Client()
    staff.force_login(UserFactory(username="sam", is_staff=True))
    response = staff.post("/smtp/", my_settings_data(sink.port_of(OPEN_MAILBOX)))
    assert response.status_code == 200
    assert "resolves to an internal address" in response.content.decode()
    assert not SmtpAccount.objects.exists()


# -- a second `manage.py demo` -------------------------------------------------------------


def start_demo(demo_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(EXAMPLE_PROJECT / "manage.py"), "demo", "--port", str(port)],
            env=demo_env(demo_dir),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def demo_env(demo_dir: Path) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo_site.settings"}
    env["DEMO_DIR"] = str(demo_dir)
    return env


def run_demo(demo_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE_PROJECT / "manage.py"), "demo", "--port", str(port)],
        env=demo_env(demo_dir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def serves(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=10) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


def database_dump(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as db:  # a bare `with` commits, it does not close
        return list(db.iterdump())


@pytest.mark.slow
def test_a_second_demo_leaves_the_running_one_alone(tmp_path):
    demo_dir, port = tmp_path / "demo", free_port()
    first = start_demo(demo_dir, port, tmp_path / "first.log")
    try:

        def first_serves() -> bool:
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            return serves(port)

        processes.wait_until(first_serves, timeout=120, what="the first demo serving")
        sink_log = demo_dir / "sink.jsonl"
        with sink_log.open("a", encoding="utf-8") as log:  # as if a message had arrived
            log.write('{"subject": "received before the second demo"}\n')
        database, received = database_dump(demo_dir / "demo.sqlite3"), sink_log.read_text()

        for second_port in (port, free_port()):
            second = run_demo(demo_dir, second_port)
            assert second.returncode == 1, second.stdout + second.stderr
            assert f"already running at http://127.0.0.1:{port}/" in second.stderr
            assert "Nothing was changed" in second.stderr
            assert first.poll() is None and serves(port)
            assert database_dump(demo_dir / "demo.sqlite3") == database
            assert sink_log.read_text() == received
    finally:
        processes.stop(first)


def test_a_port_taken_by_another_program_changes_nothing(tmp_path):
    demo_dir = tmp_path / "demo"
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        result = run_demo(demo_dir, taken)
    assert result.returncode == 1
    assert f"Port {taken} of 127.0.0.1 is in use by another program" in result.stderr
    assert "Nothing was changed" in result.stderr
    assert not (demo_dir / "demo.sqlite3").exists()
    assert not (demo_dir / "sink.jsonl").exists()


# -- the demo's OAuth account ----------------------------------------------------------------


def test_the_demo_settings_point_the_generic_provider_at_the_demos_server(monkeypatch, tmp_path):
    """The settings (default port) and what ``manage.py demo --port`` writes agree, and the
    new OAUTH_PROVIDERS checks accept the loopback http URLs."""
    from demo_site import oauth_server

    from django_multismtp.checks import _oauth_provider_errors

    monkeypatch.delenv("DEMO_PORT", raising=False)
    providers = demo_multismtp_settings(monkeypatch, tmp_path)["OAUTH_PROVIDERS"]
    assert providers == {"generic": oauth_server.provider_settings("http://127.0.0.1:8000")}
    assert _oauth_provider_errors(providers) == []


def test_the_oauth_mailbox_of_the_sink_refuses_a_token_the_server_did_not_issue(
    settings, tmp_path, sink
):
    """Only AUTH XOAUTH2 with a live token of the demo server passes (Microsoft's 535 5.7.3
    otherwise); no password gets in."""
    import base64
    import smtplib

    from demo_site import oauth_server

    settings.DEMO_DIR = tmp_path
    port = sink.port_of("Demo OAuth mailbox")
    store = oauth_server.store()
    live = oauth_server.Token("good-token", "refresh", "SMTP.Send", oauth_server.MAILBOX, 0, 10**10)
    store.tokens.append(live)

    def xoauth2(user: str, token: str) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo()
            assert smtp.esmtp_features["auth"].split() == ["XOAUTH2"]
            blob = base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode())
            return smtp.docmd("AUTH", "XOAUTH2 " + blob.decode())

    assert xoauth2(oauth_server.MAILBOX, "good-token")[0] == 235
    assert xoauth2(oauth_server.MAILBOX, "forged-token") == (
        535,
        b"5.7.3 Authentication unsuccessful [invalid_token]",
    )
    assert xoauth2("someone@demo.test", "good-token")[0] == 535
    assert xoauth2(oauth_server.MAILBOX, "göod-tökén")[0] == 535  # not a server error
    live.revoked = True
    assert xoauth2(oauth_server.MAILBOX, "good-token")[0] == 535


@pytest.fixture
def demo_oauth_server(settings, tmp_path):
    """The demo's authorization server in the test's Django (the demo's URLconf and
    templates), with its state in tmp_path; a client on 127.0.0.1 as in the demo."""
    settings.ROOT_URLCONF = "demo_site.urls"
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [EXAMPLE_PROJECT / "demo_site" / "templates"]}
    ]
    settings.DEMO_DIR = tmp_path
    return Client(SERVER_NAME="127.0.0.1")


def test_the_demo_authorization_server_grants_with_pkce_and_rotates_refresh_tokens(
    demo_oauth_server,
):
    """The grants the package's Connect and refresh use, against the demo's server: an
    authorization request without PKCE S256 is refused, a wrong verifier gets no token,
    and each refresh token works once (rotation), the old access token dying with it."""
    import base64
    import hashlib
    from urllib.parse import parse_qs, urlencode, urlsplit

    from demo_site import oauth_server

    client = demo_oauth_server
    callback = "http://127.0.0.1:8000/smtp/oauth/callback/"
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {
        "response_type": "code",
        "client_id": oauth_server.CLIENT_ID,
        "redirect_uri": callback,
        "scope": oauth_server.SCOPE,
        "state": "s1",
    }
    refused = client.get("/oauth/authorize/?" + urlencode(query))
    assert refused.status_code == 400 and "S256 is required" in refused.content.decode()
    elsewhere = {**query, "redirect_uri": "http://evil.example/smtp/oauth/callback/"}
    assert client.get("/oauth/authorize/?" + urlencode(elsewhere)).status_code == 400

    def code() -> str:
        url = "/oauth/authorize/?" + urlencode(
            {
                **query,
                "code_challenge": challenge.decode().rstrip("="),
                "code_challenge_method": "S256",
            }
        )
        assert client.get(url).status_code == 200
        wrong = client.post(url, {"mailbox": oauth_server.MAILBOX, "password": "x"})
        assert wrong.status_code == 400
        answer = client.post(
            url, {"mailbox": oauth_server.MAILBOX, "password": oauth_server.MAILBOX_PASSWORD}
        )
        assert answer.status_code == 302 and answer["Location"].startswith(callback)
        params = parse_qs(urlsplit(answer["Location"]).query)
        assert params["state"] == ["s1"]
        return params["code"][0]

    def token(**data: str) -> Any:
        return client.post(
            "/oauth/token/",
            {
                "client_id": oauth_server.CLIENT_ID,
                "client_secret": oauth_server.CLIENT_SECRET,
                **data,
            },
        )

    exchange = {"grant_type": "authorization_code", "redirect_uri": callback}
    bad = token(**exchange, code=code(), code_verifier="w" * 64)
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_grant"
    first = token(**exchange, code=code(), code_verifier=verifier).json()
    assert first["refresh_token"] and first["expires_in"] == 3600
    assert oauth_server.check_bearer(oauth_server.MAILBOX, first["access_token"]) is None

    second = token(grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert oauth_server.check_bearer(oauth_server.MAILBOX, second["access_token"]) is None
    assert oauth_server.check_bearer(oauth_server.MAILBOX, first["access_token"])
    again = token(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    # Kept in the demo directory: a restarted demo knows the grant.
    reloaded = oauth_server.Store.load(oauth_server.store().path)
    assert reloaded.find(refresh_token=second["refresh_token"]) is not None
    # Disconnect revokes (RFC 7009): the refresh token and its access token are dead.
    revoked = client.post(
        "/oauth/revoke/",
        {
            "token": second["refresh_token"],
            "token_type_hint": "refresh_token",
            "client_id": oauth_server.CLIENT_ID,
            "client_secret": oauth_server.CLIENT_SECRET,
        },
    )
    assert revoked.status_code == 200
    assert oauth_server.check_bearer(oauth_server.MAILBOX, second["access_token"])
    assert (
        token(grant_type="refresh_token", refresh_token=second["refresh_token"]).json()["error"]
        == "invalid_grant"
    )
