"""Start the real OAuth 2.0 authorization server of ``tests/oauth_server`` for a test run.

django-oauth-toolkit runs in its own process on 127.0.0.1 (its own settings and SQLite
database), so the app under test reaches it only over HTTP, as it reaches Microsoft or
Google: authorization code with PKCE, refresh, client credentials, revocation and
introspection are the toolkit's, not ours. :meth:`AuthServer.check_bearer` is what the
test SMTP server asks before accepting an XOAUTH2/OAUTHBEARER login.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent

MAILBOX = "alice@example.com"
MAILBOX_PASSWORD = "alice-authserver-pw"
#: The app our code uses for the authorization-code flow.
WEB_CLIENT = ("multismtp-web", "web-secret-9f2c1d")
#: The app-only (client-credentials) app, acting for the shared mailbox.
DAEMON_CLIENT = ("multismtp-daemon", "daemon-secret-77ab01")
#: The SMTP server's own credentials for the introspection endpoint.
RESOURCE_CLIENT = ("smtp-resource-server", "resource-secret-5e6f")
SMTP_SCOPE = "SMTP.Send"


#: A Workspace service account with domain-wide delegation (the JWT-bearer grant).
SERVICE_ACCOUNT = "mailer@project.iam.example.test"


def _service_account_keys() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class AuthServer:
    def __init__(self, redirect_uris: list[str]) -> None:
        self.directory = tempfile.TemporaryDirectory(prefix="authserver-")
        #: The service account's private key (PEM), as Google's JSON key file holds it.
        self.service_account_key, public_key = _service_account_keys()
        fixtures = {
            "users": [
                {"username": MAILBOX, "password": MAILBOX_PASSWORD},
                {"username": "shared@example.com", "password": "x-not-used-1"},
            ],
            "service_accounts": {SERVICE_ACCOUNT: public_key},
            "applications": [
                {
                    "client_id": WEB_CLIENT[0],
                    "client_secret": WEB_CLIENT[1],
                    "grant_type": "authorization-code",
                    "redirect_uris": redirect_uris,
                },
                {
                    "client_id": DAEMON_CLIENT[0],
                    "client_secret": DAEMON_CLIENT[1],
                    "grant_type": "client-credentials",
                    "user": "shared@example.com",
                },
                {
                    "client_id": SERVICE_ACCOUNT,
                    "client_secret": "not-used-by-the-jwt-grant",
                    "grant_type": "client-credentials",
                },
                {
                    "client_id": RESOURCE_CLIENT[0],
                    "client_secret": RESOURCE_CLIENT[1],
                    "grant_type": "client-credentials",
                },
            ],
        }
        path = Path(self.directory.name) / "fixtures.json"
        path.write_text(json.dumps(fixtures))
        env = {
            **os.environ,
            "OAUTH_SERVER_DB": str(Path(self.directory.name) / "db.sqlite3"),
            "DJANGO_SETTINGS_MODULE": "tests.oauth_server.settings",
            "PYTHONPATH": str(ROOT),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.oauth_server.serve", str(path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the authorization server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/o/token/"

    @property
    def authorize_url(self) -> str:
        return f"{self.url}/o/authorize/"

    @property
    def revoke_url(self) -> str:
        return f"{self.url}/o/revoke_token/"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.directory.cleanup()

    def _post(self, path: str, data: dict[str, str], auth: tuple[str, str] | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 (our own http://127.0.0.1 URL)
            self.url + path, data=urllib.parse.urlencode(data).encode(), method="POST"
        )
        if auth is not None:
            basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())

    def control(self, action: str, **params: str) -> dict[str, Any]:
        result: dict[str, Any] = self._post("/test/control/", {"action": action, **params})
        return result

    def introspect(self, token: str) -> dict[str, Any]:
        result: dict[str, Any] = self._post("/o/introspect/", {"token": token}, RESOURCE_CLIENT)
        return result

    def check_bearer(self, user: str, token: str) -> str | None:
        """None when the token may send as ``user``; else why not (as a provider says it)."""
        info = self.introspect(token)
        if not info.get("active"):
            return "invalid_token"
        if SMTP_SCOPE not in str(info.get("scope", "")).split():
            return "insufficient_scope"
        owner = info.get("username")
        if owner and owner != user:
            return "invalid_token"  # a token of another mailbox
        return None
