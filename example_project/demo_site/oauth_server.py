"""The demo's own OAuth 2.0 authorization server, so "Connect" works with no Microsoft or
Google account.

Authlib (already a dependency of the package) does the protocol: the authorization-code
grant with PKCE (S256, required), the refresh-token grant (refresh tokens rotate, as
Microsoft's do) and RFC 7009 revocation. This module only keeps the state, in one JSON
file of the demo directory (codes, tokens) so a connected account survives a restart,
and serves the pages: a sign-in and consent page for the demo mailbox, the token and
revocation endpoints, and a page listing the grants with a "Revoke" button (to see the
package's *needs reconnect* state). It runs inside the demo's development server on
127.0.0.1; the SMTP sink asks :func:`check_bearer` about each ``AUTH XOAUTH2`` token, as
Microsoft's and Google's servers ask theirs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authlib.integrations.django_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

#: The app the demo's "Demo OAuth mailbox" account logs in with (demo only, not secret).
CLIENT_ID = "multismtp-demo"
CLIENT_SECRET = "demo-client-secret"  # noqa: S105
SCOPE = "SMTP.Send"
#: The mailbox a person signs in as on the consent page, and its password.
MAILBOX = "oauth@demo.test"
MAILBOX_PASSWORD = "oauth"  # noqa: S105
#: Where the package's callback lives in the demo's URLconf (``smtp/`` + ``oauth/callback/``).
CALLBACK_PATH = "/smtp/oauth/callback/"
ACCESS_TOKEN_SECONDS = 3600
CODE_SECONDS = 600


def provider_settings(base_url: str) -> dict[str, Any]:
    """The ``MULTISMTP["OAUTH_PROVIDERS"]["generic"]`` entry for a demo served at ``base_url``."""
    return {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "authorize_url": f"{base_url}/oauth/authorize/",
        "token_url": f"{base_url}/oauth/token/",
        "revoke_url": f"{base_url}/oauth/revoke/",
        "scopes": SCOPE,
    }


# -- state -------------------------------------------------------------------------------


@dataclass
class Code:
    code: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str
    code_challenge_method: str
    issued_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Token:
    access_token: str
    refresh_token: str
    scope: str
    user: str
    issued_at: float
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105
    revoked: bool = False

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == CLIENT_ID)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str:
        return self.user

    def get_client(self) -> Client:
        return Client()


@dataclass
class Store:
    """Codes and tokens, written to ``path`` after every change (a lock: the server's
    threads and the sink's thread share it)."""

    path: Path
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: list[Token] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @classmethod
    def load(cls, path: Path) -> Store:
        store = cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return store
        store.codes = {c["code"]: Code(**c) for c in data.get("codes", [])}
        store.tokens = [Token(**t) for t in data.get("tokens", [])]
        return store

    def save(self) -> None:
        data = {
            "codes": [asdict(c) for c in self.codes.values()],
            "tokens": [asdict(t) for t in self.tokens],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(data, indent=1), encoding="utf-8")
        partial.replace(self.path)

    def find(self, **match: str) -> Token | None:
        with self.lock:
            for token in self.tokens:
                # Bytes: compare_digest() refuses str with non-ASCII characters, which
                # anyone can send as a token.
                if all(
                    hmac.compare_digest(getattr(token, k).encode(), v.encode())
                    for k, v in match.items()
                    if v
                ) and any(match.values()):
                    return token
        return None


_store: Store | None = None
_store_lock = threading.Lock()


def store() -> Store:
    global _store
    with _store_lock:
        path = Path(settings.DEMO_DIR) / "oauth-server.json"
        if _store is None or _store.path != path:
            _store = Store.load(path)
        return _store


def check_bearer(user: str, token: str) -> str | None:
    """None when ``token`` may send as ``user``; else the reason, as a provider gives it.

    What the sink asks before accepting ``AUTH XOAUTH2``: an unknown, expired or revoked
    token, one without the SMTP scope or one of another mailbox is refused.
    """
    found = store().find(access_token=token) if token else None
    if found is None or found.revoked or found.is_expired():
        return "invalid_token"
    if SCOPE not in found.scope.split():
        return "insufficient_scope"
    if user.lower() != found.user.lower():
        return "invalid_token"
    return None


# -- Authlib's pieces --------------------------------------------------------------------


class Client(ClientMixin):  # type: ignore[misc]
    """The one registered app. Its redirect URI is the package's callback on this machine,
    whatever port the demo serves on."""

    def get_client_id(self) -> str:
        return CLIENT_ID

    def get_default_redirect_uri(self) -> str:
        return ""

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in (scope or "").split() if s in (SCOPE, "offline_access"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        parts = urlsplit(redirect_uri)
        return (
            parts.scheme == "http"
            and parts.hostname in ("127.0.0.1", "localhost")
            and parts.path == CALLBACK_PATH
            and not parts.query
        )

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest((client_secret or "").encode(), CLIENT_SECRET.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_post", "client_secret_basic")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_post", "client_secret_basic"]  # noqa: RUF012

    def save_authorization_code(self, code: str, request: Any) -> Code:
        item = Code(
            code=code,
            redirect_uri=request.payload.redirect_uri or "",
            scope=request.payload.scope or "",
            user=str(request.user),
            code_challenge=request.payload.data.get("code_challenge", ""),
            code_challenge_method=request.payload.data.get("code_challenge_method", ""),
            issued_at=time.time(),
        )
        s = store()
        with s.lock:
            s.codes[code] = item
            s.save()
        return item

    def query_authorization_code(self, code: str, client: Any) -> Code | None:
        item = store().codes.get(code)
        if item is None or time.time() > item.issued_at + CODE_SECONDS:
            return None
        return item

    def delete_authorization_code(self, authorization_code: Code) -> None:
        s = store()
        with s.lock:
            s.codes.pop(authorization_code.code, None)
            s.save()

    def authenticate_user(self, authorization_code: Code) -> str:
        return authorization_code.user


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_post", "client_secret_basic"]  # noqa: RUF012
    #: A new refresh token on every refresh, the old one revoked (as Microsoft does).
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        token = store().find(refresh_token=refresh_token)
        return None if token is None or token.revoked else token

    def authenticate_user(self, refresh_token: Token) -> str:
        return refresh_token.user

    def revoke_old_credential(self, refresh_token: Token) -> None:
        s = store()
        with s.lock:
            refresh_token.revoked = True
            s.save()


class Revocation(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["client_secret_post", "client_secret_basic"]  # noqa: RUF012

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        return store().find(refresh_token=token_string) or store().find(access_token=token_string)

    def revoke_token(self, token: Token, request: Any) -> None:
        revoke_grant(token)


def revoke_grant(token: Token) -> None:
    """Revoke ``token``'s refresh and access token (consent withdrawn)."""
    s = store()
    with s.lock:
        token.revoked = True
        s.save()


class Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(client_model=None, token_model=None)

    def load_config(self, config: Any) -> None:
        super().load_config(
            {
                "refresh_token_generator": True,
                "token_expires_in": {
                    "authorization_code": ACCESS_TOKEN_SECONDS,
                    "refresh_token": ACCESS_TOKEN_SECONDS,
                },
            }
        )

    def query_client(self, client_id: str) -> Client | None:
        return Client() if client_id == CLIENT_ID else None

    def save_token(self, token: dict[str, Any], request: Any) -> Token:
        item = Token(
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token", ""),
            scope=token.get("scope", ""),
            user=str(request.user),
            issued_at=time.time(),
            expires_in=int(token.get("expires_in", ACCESS_TOKEN_SECONDS)),
        )
        s = store()
        with s.lock:
            s.tokens.append(item)
            del s.tokens[:-50]  # a demo: the last grants are enough
            s.save()
        return item


server = Server()
server.register_grant(AuthorizationCodeGrant, [CodeChallenge(required=True)])
server.register_grant(RefreshTokenGrant)
server.register_endpoint(Revocation)


# -- pages -------------------------------------------------------------------------------


def authorize(request: HttpRequest) -> HttpResponse:
    """Sign in as the demo mailbox and allow (or deny) the app: the provider's login and
    consent pages in one. No Django login: the mailbox is the provider's account."""
    try:
        grant = server.get_consent_grant(request)
    except OAuth2Error as error:
        return render(
            request,
            "demo_site/oauth_consent.html",
            {"invalid": f"{error.error}: {error.description or ''}"},
            status=400,
        )
    if grant.request.payload.data.get("code_challenge_method") != "S256":
        # PKCE is optional for a confidential client in RFC 6749; this server, like
        # Entra ID for single-page apps, insists, so a client that skips it is caught.
        return render(
            request,
            "demo_site/oauth_consent.html",
            {"invalid": "invalid_request: PKCE with code_challenge_method=S256 is required."},
            status=400,
        )
    problem = ""
    if request.method == "POST":
        if "deny" in request.POST:
            return server.create_authorization_response(request, grant_user=None, grant=grant)  # type: ignore[no-any-return]
        mailbox = request.POST.get("mailbox", "").strip().lower()
        password = request.POST.get("password", "")
        if mailbox == MAILBOX and hmac.compare_digest(password.encode(), MAILBOX_PASSWORD.encode()):
            return server.create_authorization_response(request, grant_user=mailbox, grant=grant)  # type: ignore[no-any-return]
        problem = "Wrong mailbox or password."
    return render(
        request,
        "demo_site/oauth_consent.html",
        {
            "scopes": grant.request.payload.scope,
            "redirect_uri": grant.request.payload.redirect_uri,
            "mailbox": MAILBOX,
            "password": MAILBOX_PASSWORD,
            "problem": problem,
        },
        status=400 if problem else 200,
    )


@csrf_exempt
@require_POST
def token(request: HttpRequest) -> HttpResponse:
    return server.create_token_response(request)  # type: ignore[no-any-return]


@csrf_exempt
@require_POST
def revoke(request: HttpRequest) -> HttpResponse:
    return server.create_endpoint_response(Revocation.ENDPOINT_NAME, request)  # type: ignore[no-any-return]


def grants_page(request: HttpRequest) -> HttpResponse:
    """The grants the demo server has issued, with "Revoke" (consent withdrawn at the
    provider): the next token refresh fails and the account shows *needs reconnect*."""
    if request.method == "POST":
        wanted = request.POST.get("grant", "")
        for found in list(store().tokens):
            if wanted and grant_id(found) == wanted:
                revoke_grant(found)
        return redirect("oauth_grants")
    live = [t for t in reversed(store().tokens) if not t.revoked and t.refresh_token]
    rows = [
        {
            "user": t.user,
            "scope": t.scope,
            "issued": time.strftime("%H:%M:%S", time.gmtime(t.issued_at)),
            "expires_in": max(0, int(t.issued_at + t.expires_in - time.time())),
            "id": grant_id(t),
        }
        for t in live
    ]
    return render(request, "demo_site/oauth_grants.html", {"grants": rows})


def grant_id(token: Token) -> str:
    """A handle for the grants page that is not the refresh token itself."""
    return hashlib.sha256(token.refresh_token.encode()).hexdigest()[:16]
