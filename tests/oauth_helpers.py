"""Test helpers for OAuth: the authorization-code flow driven over HTTP (no browser).

A person signing in and clicking "Authorize" is simulated with ``requests`` against the
real authorization server's login and consent pages; Authlib builds the PKCE request and
exchanges the code, as the app's connect view does.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from tests.oauth_authserver import MAILBOX, MAILBOX_PASSWORD, WEB_CLIENT, AuthServer

REDIRECT_URI = "http://127.0.0.1:8000/oauth/callback/"
_INPUT = re.compile(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.I)


def _form_fields(text: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in _INPUT.findall(text)}


def sign_in_and_consent(server: AuthServer, authorize_url: str, *, allow: bool = True) -> str:
    """Follow ``authorize_url`` as the mailbox owner; return the redirect with the code
    (or, with ``allow=False``, the one saying the owner declined)."""
    browser = requests.Session()
    try:
        page = browser.get(authorize_url, timeout=10)  # -> login page
        fields = _form_fields(page.text)
        fields.update(username=MAILBOX, password=MAILBOX_PASSWORD)
        page = browser.post(page.url, data=fields, timeout=10)  # -> consent page
        fields = _form_fields(page.text)
        if allow:
            fields["allow"] = "Authorize"
        else:  # "Cancel": the form without its Authorize button
            fields.pop("allow", None)
        answer = browser.post(page.url, data=fields, timeout=10, allow_redirects=False)
    finally:
        browser.close()
    assert answer.status_code == 302, answer.text[:500]
    return str(answer.headers["Location"])


def obtain_refresh_token(server: AuthServer, scope: str = "SMTP.Send") -> dict[str, Any]:
    client = OAuth2Session(
        WEB_CLIENT[0],
        WEB_CLIENT[1],
        scope=scope,
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_post",
    )
    verifier = generate_token(64)
    url, state = client.create_authorization_url(server.authorize_url, code_verifier=verifier)
    location = sign_in_and_consent(server, url)
    assert parse_qs(urlparse(location).query)["state"] == [state]
    token = client.fetch_token(
        server.token_url, authorization_response=location, code_verifier=verifier
    )
    client.close()
    return dict(token)
