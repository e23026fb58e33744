"""System checks with stable ids, so a misconfiguration is reported before mail is lost.

=====================  ========================================================
id                     meaning
=====================  ========================================================
django_multismtp.E001  FERNET_KEYS is not a non-empty list of non-empty strings
django_multismtp.W001  FERNET_KEYS unset: passwords are encrypted with SECRET_KEY
django_multismtp.E002  unknown purpose (DEFAULT_PURPOSE or a mailer's OPTIONS)
django_multismtp.E003  unknown key in the MULTISMTP setting (a typo?)
django_multismtp.W002  the cache cannot back django-ratelimit across processes (deploy)
django_multismtp.W003  no mailer uses django_multismtp.backends.EmailBackend
django_multismtp.E004  MULTISMTP is not a dict / PURPOSES is not a dict
django_multismtp.E005  an OUTBOX setting has a value it cannot take
django_multismtp.E006  a mailer's OPTIONS name an option our backend does not take
django_multismtp.W004  queued mail waits with no worker (``check --database``)
django_multismtp.E007  POOL_POLICY (or a mailer's ``pool`` option) is not a known policy
django_multismtp.E008  LOG_RECIPIENTS is not "plain", "hashed" or "off"
django_multismtp.W005  ALLOW_INTERNAL_HOSTS is on (``check --deploy``)
django_multismtp.W006  SERVER_EMAIL / DEFAULT_FROM_EMAIL is Django's default (deploy)
django_multismtp.E009  OAUTH_PROVIDERS is malformed (not a dict, unknown key, scopes...)
django_multismtp.E010  an OAUTH_PROVIDERS entry that is no known provider names no token_url
django_multismtp.E011  an OAUTH_PROVIDERS URL is not https (loopback http is allowed)
django_multismtp.E012  an OAUTH_PROVIDERS secret is a placeholder, or private_key is no PEM
django_multismtp.W007  an OAUTH_PROVIDERS entry of another server names no client_id
=====================  ========================================================
"""

from __future__ import annotations

import difflib
import ipaddress
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError
from django.utils.module_loading import import_string

from . import compat, conf
from .oauth import providers as oauth_providers
from .oauth.health import secret_expiry

BACKEND_PATHS = {
    "django_multismtp.backends.EmailBackend",
    "django_multismtp.backends.smtp.EmailBackend",
    "django_multismtp.backends.test.EmailBackend",
}
#: Every option our backend takes: Django's SMTP backend's, then ours.
BACKEND_OPTIONS = (
    "host",
    "port",
    "username",
    "password",
    "use_tls",
    "use_ssl",
    "timeout",
    "ssl_keyfile",
    "ssl_certfile",
    "fail_silently",
    "account",
    "user",
    "purpose",
    "pool",
    "fallback",
)
UNSHARED_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.filebased.FileBasedCache",
    "django.core.cache.backends.dummy.DummyCache",
}


@register(Tags.security)
def check_fernet_keys(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    keys = getattr(settings, "FERNET_KEYS", None)
    if keys is None:
        return [
            Warning(
                "FERNET_KEYS is not set: SMTP passwords are encrypted with SECRET_KEY, and "
                "changing SECRET_KEY makes them unreadable.",
                hint="Set FERNET_KEYS = [<a long random string>] (new keys go first).",
                id="django_multismtp.W001",
            )
        ]
    if (
        not isinstance(keys, list | tuple)
        or not keys
        or not all(isinstance(k, str | bytes) and k for k in keys)
    ):
        return [
            Error(
                "FERNET_KEYS must be a non-empty list of non-empty strings.",
                hint="For example FERNET_KEYS = [env('NEW_KEY'), env('OLD_KEY')].",
                id="django_multismtp.E001",
            )
        ]
    return []


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    raw = getattr(settings, "MULTISMTP", {})
    if not isinstance(raw, dict):
        return [
            Error(
                "The MULTISMTP setting must be a dict.",
                hint='For example MULTISMTP = {"DEFAULT_PURPOSE": "system"}.',
                id="django_multismtp.E004",
            )
        ]
    for key in sorted(set(raw) - set(conf.DEFAULTS)):
        errors.append(
            Error(
                f"Unknown key {key!r} in the MULTISMTP setting.",
                hint="Known keys: " + ", ".join(sorted(conf.DEFAULTS)),
                id="django_multismtp.E003",
            )
        )
    if not isinstance(raw.get("PURPOSES", {}), dict):
        errors.append(
            Error(
                'MULTISMTP["PURPOSES"] must be a dict of purpose -> label.',
                id="django_multismtp.E004",
            )
        )
    purposes = conf.purposes()
    if conf.default_purpose() not in purposes:
        errors.append(
            Error(
                f'MULTISMTP["DEFAULT_PURPOSE"] is {conf.default_purpose()!r}, not a known purpose.',
                hint="Known purposes: " + ", ".join(purposes),
                id="django_multismtp.E002",
            )
        )
    errors.extend(_outbox_errors(raw))
    errors.extend(_pool_errors(raw.get("POOL_POLICY", conf.DEFAULTS["POOL_POLICY"])))
    errors.extend(_oauth_provider_errors(raw.get("OAUTH_PROVIDERS", {})))
    if raw.get("LOG_RECIPIENTS", "plain") not in conf.LOG_RECIPIENT_MODES:
        errors.append(
            Error(
                f'MULTISMTP["LOG_RECIPIENTS"] is {raw["LOG_RECIPIENTS"]!r}; the delivery log '
                "then records no recipients.",
                hint="Use one of: " + ", ".join(map(repr, conf.LOG_RECIPIENT_MODES)) + ".",
                id="django_multismtp.E008",
            )
        )
    backends = compat.configured_backends()
    ours = {alias: options for alias, (path, options) in backends.items() if path in BACKEND_PATHS}
    for alias, options in ours.items():
        # Django raises InvalidMailer for these when the mailer is first used (and
        # before 6.1 ignores them): name the likely typo before any mail is lost.
        for name in sorted(set(options) - set(BACKEND_OPTIONS)):
            close = difflib.get_close_matches(name, BACKEND_OPTIONS, n=1)
            errors.append(
                Error(
                    f"MAILERS[{alias!r}] OPTIONS name the unknown option {name!r}.",
                    hint=(f"Did you mean {close[0]!r}? " if close else "")
                    + "Known options: "
                    + ", ".join(BACKEND_OPTIONS),
                    id="django_multismtp.E006",
                )
            )
        purpose = options.get("purpose")
        if purpose is not None and purpose not in purposes:
            errors.append(
                Error(
                    f"MAILERS[{alias!r}] OPTIONS name the unknown purpose {purpose!r}.",
                    hint="Known purposes: " + ", ".join(purposes),
                    id="django_multismtp.E002",
                )
            )
        pool = options.get("pool")
        if pool is not None and pool not in conf.POOL_POLICIES:
            errors.append(
                Error(
                    f"MAILERS[{alias!r}] OPTIONS name the unknown pool policy {pool!r}.",
                    hint="Known policies: " + ", ".join(conf.POOL_POLICIES),
                    id="django_multismtp.E007",
                )
            )
    if not ours:
        errors.append(
            Warning(
                "No mailer uses django_multismtp's backend, so the SMTP accounts are not used.",
                hint='Set MAILERS["default"]["BACKEND"] (Django 6.1) or EMAIL_BACKEND to '
                '"django_multismtp.backends.EmailBackend".',
                id="django_multismtp.W003",
            )
        )
    return errors


@register(Tags.security, Tags.caches, deploy=True)
def check_rate_limit_cache(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """W002, with ``check --deploy``: a per-process cache is fine on a developer's
    machine (one process), and only lets the code limits multiply in production."""
    errors: list[Any] = []
    caches = getattr(settings, "CACHES", {})
    alias = getattr(settings, "RATELIMIT_USE_CACHE", "default")
    if alias not in caches and alias != "default":
        errors.append(
            Warning(
                f"RATELIMIT_USE_CACHE names the cache {alias!r}, which CACHES does not define.",
                hint="Add it to CACHES or point RATELIMIT_USE_CACHE at an existing cache.",
                id="django_multismtp.W002",
            )
        )
        return errors
    backend = caches.get(alias, {}).get("BACKEND", "django.core.cache.backends.locmem.LocMemCache")
    if backend in UNSHARED_CACHES and getattr(settings, "RATELIMIT_ENABLE", True):
        errors.append(
            Warning(
                f"The {alias!r} cache ({backend.rsplit('.', 1)[-1]}) is not shared between "
                "processes, so the limits on verification codes hold per process only.",
                hint="Use Redis or Memcached for that cache, or set RATELIMIT_USE_CACHE to one.",
                id="django_multismtp.W002",
            )
        )
    return errors


#: Django's defaults for the sender addresses: real providers refuse both.
DJANGO_DEFAULT_ADDRESSES = {
    "SERVER_EMAIL": "root@localhost",
    "DEFAULT_FROM_EMAIL": "webmaster@localhost",
}


@register(Tags.security, deploy=True)
def check_deployment(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """What is right while developing and wrong on a public site (``check --deploy``)."""
    errors: list[Any] = []
    if conf.get_setting("ALLOW_INTERNAL_HOSTS"):
        errors.append(
            Warning(
                'MULTISMTP["ALLOW_INTERNAL_HOSTS"] is on: account owners may point their '
                "account at hosts on the server's own network (localhost, 10.x, ...).",
                hint="Turn it off in production unless every account owner is trusted.",
                id="django_multismtp.W005",
            )
        )
    for name, default in DJANGO_DEFAULT_ADDRESSES.items():
        if getattr(settings, name, default) == default:
            errors.append(
                Warning(
                    f"{name} is Django's default {default!r}; SMTP providers refuse mail from it.",
                    hint=f"Set {name} to an address of a domain your accounts may send for.",
                    id="django_multismtp.W006",
                )
            )
    return errors


@register(Tags.database)
def check_outbox_worker(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """Queued mail waiting with no worker (see :mod:`django_multismtp.stall`).

    Tagged ``database``: Django runs it only when asked (``manage.py check --database
    default``, as a deployment or monitoring step), never at every start-up.
    """
    if not databases:
        return []
    from . import clock, stall  # models: not importable while the app registry loads

    try:
        stuck = stall.stalled(clock.now())
    except DatabaseError:  # not migrated yet: nothing can be queued
        return []
    if stuck is None:
        return []
    return [
        Warning(
            stuck.message(),
            hint="Run a worker; see 'Running workers' in the delivery docs.",
            id="django_multismtp.W004",
        )
    ]


def _outbox_errors(raw: dict[str, Any]) -> list[Any]:
    """A typo in OUTBOX would silently change what happens to failed mail: refuse it."""
    errors: list[Any] = []

    def error(key: str, text: str, hint: str) -> None:
        errors.append(Error(f'MULTISMTP["{key}"] {text}', hint=hint, id="django_multismtp.E005"))

    mode = raw.get("OUTBOX", "retry")
    if mode not in conf.OUTBOX_MODES and mode not in (False, None):
        error("OUTBOX", f"is {mode!r}.", 'Use "retry" (the default), "always" or "off".')
    for key in ("OUTBOX_MAX_ATTEMPTS", "OUTBOX_BATCH_SIZE", "SEND_SLICE"):
        value = raw.get(key, conf.DEFAULTS[key])
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            error(key, f"is {value!r}, not a whole number of at least 1.", "For example 10.")
    for key in (
        "OUTBOX_RETRY_BACKOFF",
        "OUTBOX_RETRY_BACKOFF_MAX",
        "OUTBOX_LEASE",
        "OUTBOX_POLL_INTERVAL",
        "OUTBOX_MAX_AGE",
        "OUTBOX_STALL_AFTER",
        "CONNECTION_LEASE",
    ):
        value = raw.get(key, conf.DEFAULTS[key])
        if key == "OUTBOX_MAX_AGE" and value is None:
            continue
        try:
            seconds = conf.as_timedelta(value).total_seconds()
        except (TypeError, ValueError):
            seconds = -1
        if isinstance(value, bool) or seconds <= 0:
            error(key, f"is {value!r}, not a positive duration.", "Use a timedelta or seconds.")
    wait = raw.get("CONNECTION_WAIT", conf.DEFAULTS["CONNECTION_WAIT"])
    try:
        wait_seconds = conf.as_timedelta(wait).total_seconds()
    except (TypeError, ValueError):
        wait_seconds = -1
    if isinstance(wait, bool) or wait_seconds < 0:
        error(
            "CONNECTION_WAIT", f"is {wait!r}, not a duration.", "A timedelta or seconds (0: none)."
        )
    if not isinstance(raw.get("OUTBOX_QUEUE_CONFIG_ERRORS", False), bool):
        error(
            "OUTBOX_QUEUE_CONFIG_ERRORS",
            f"is {raw['OUTBOX_QUEUE_CONFIG_ERRORS']!r}, not True or False.",
            "Leave it False unless someone watches the outbox (see docs/delivery.rst).",
        )
    wake = raw.get("OUTBOX_WAKE")
    if isinstance(wake, str):
        try:
            import_string(wake)
        except ImportError as exc:
            error("OUTBOX_WAKE", f"cannot be imported: {exc}", "Give a dotted path to a callable.")
    elif wake is not None and not callable(wake):
        error("OUTBOX_WAKE", "is neither a dotted path nor a callable.", "Or leave it None.")
    return errors


def _pool_errors(value: Any) -> list[Any]:
    """POOL_POLICY: one known policy, or a dict of purpose (or "*") -> known policy."""
    known = ", ".join(conf.POOL_POLICIES)
    values = value.values() if isinstance(value, dict) else [value]
    bad = [v for v in values if v not in conf.POOL_POLICIES]
    if not bad:
        return []
    return [
        Error(
            f'MULTISMTP["POOL_POLICY"] holds {bad[0]!r}, not a pool policy.',
            hint=f'Use one of {known}, or a dict {{purpose: policy}} with "*" for the rest.',
            id="django_multismtp.E007",
        )
    ]


#: The keys an OAUTH_PROVIDERS entry may hold (what ``oauth.providers.resolve`` reads).
OAUTH_PROVIDER_KEYS = (
    "client_id",
    "client_secret",
    "tenant",
    "authorize_url",
    "token_url",
    "revoke_url",
    "scopes",
    "authorize_params",
    "private_key",
    "token_auth_method",
    "client_secret_expires",
)
OAUTH_URL_KEYS = ("authorize_url", "token_url", "revoke_url")
#: The client authentications Authlib's OAuth2Session knows.
OAUTH_TOKEN_AUTH_METHODS = (
    "client_secret_post",
    "client_secret_basic",
    "client_secret_jwt",
    "private_key_jwt",
    "none",
)
#: Values copied from an example rather than from the provider's console.
SECRET_PLACEHOLDERS = {"...", "\u2026", "secret", "changeme", "change-me", "xxx", "todo"}


def _oauth_provider_errors(value: Any) -> list[Any]:
    """MULTISMTP["OAUTH_PROVIDERS"]: read only when a token is needed, so a mistake here
    would otherwise surface months later as an account that cannot connect or refresh."""
    if not isinstance(value, dict):
        return [
            Error(
                f'MULTISMTP["OAUTH_PROVIDERS"] is {type(value).__name__}, not a dict.',
                hint='For example {"microsoft": {"client_id": ..., "client_secret": ...}}.',
                id="django_multismtp.E009",
            )
        ]
    errors: list[Any] = []
    for name, entry in value.items():
        errors.extend(_oauth_entry_errors(str(name), entry))
    return errors


def _oauth_entry_errors(name: str, entry: Any) -> list[Any]:
    where = f'MULTISMTP["OAUTH_PROVIDERS"][{name!r}]'
    if not isinstance(entry, dict):
        return [
            Error(
                f"{where} is {type(entry).__name__}, not a dict of the provider's app settings.",
                hint="Keys: " + ", ".join(OAUTH_PROVIDER_KEYS),
                id="django_multismtp.E009",
            )
        ]
    errors: list[Any] = []

    def error(code: str, text: str, hint: str) -> None:
        errors.append(Error(f"{where} {text}", hint=hint, id=f"django_multismtp.{code}"))

    for key in sorted(set(entry) - set(OAUTH_PROVIDER_KEYS), key=str):
        close = difflib.get_close_matches(str(key), OAUTH_PROVIDER_KEYS, n=1)
        error(
            "E009",
            f"has the unknown key {key!r}, which is ignored.",
            (f"Did you mean {close[0]!r}? " if close else "")
            + "Known keys: "
            + ", ".join(OAUTH_PROVIDER_KEYS),
        )
    for key in ("client_id", "client_secret", "tenant", "private_key", *OAUTH_URL_KEYS):
        if key in entry and not isinstance(entry[key], str):
            error(
                "E009",
                f"[{key!r}] is {type(entry[key]).__name__}, not a string.",
                "Give the value as text (read secrets from the environment or a file).",
            )
    scopes = entry.get("scopes", "")
    if not isinstance(scopes, str) and not (
        isinstance(scopes, list | tuple) and all(isinstance(s, str) for s in scopes)
    ):
        error(
            "E009",
            f"['scopes'] is {scopes!r}, neither a string nor a list of strings.",
            'For example "https://mail.google.com/" or ["SMTP.Send", "offline_access"].',
        )
    params = entry.get("authorize_params", {})
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        error(
            "E009",
            "['authorize_params'] is not a dict of strings.",
            'Extra query parameters of the authorization request, e.g. {"prompt": "consent"}.',
        )
    if "client_secret_expires" in entry and secret_expiry(entry["client_secret_expires"]) is None:
        error(
            "E009",
            f"['client_secret_expires'] is {entry['client_secret_expires']!r}, not a date.",
            'The date the provider\'s console shows, as "YYYY-MM-DD" or a datetime.date.',
        )
    method = entry.get("token_auth_method", "client_secret_post")
    if method not in OAUTH_TOKEN_AUTH_METHODS:
        error(
            "E009",
            f"['token_auth_method'] is {method!r}, which the token endpoint cannot be sent.",
            "Use one of: " + ", ".join(OAUTH_TOKEN_AUTH_METHODS) + ".",
        )
    known = name in oauth_providers.PROVIDERS and name != "generic"
    if not known and not entry.get("token_url"):
        close = difflib.get_close_matches(name.lower(), ["microsoft", "google"], n=1)
        error(
            "E010",
            "is not a provider django-multismtp knows and gives no token_url, so no account "
            "of it can get a token.",
            (f"Did you mean {close[0]!r}? " if close else "")
            + "Built-in providers: microsoft, google. For another server give its "
            "token_url and authorize_url (and client_id).",
        )
    elif not known and not entry.get("client_id"):
        errors.append(
            Warning(
                f"{where} gives no client_id: every account of this provider must then "
                "have its own.",
                hint="Add the client id your authorization server registered for this site.",
                id="django_multismtp.W007",
            )
        )
    for key in OAUTH_URL_KEYS:
        url = entry.get(key)
        if isinstance(url, str) and url and (problem := _insecure_url(url)):
            error(
                "E011",
                f"[{key!r}] is {url!r}: {problem}",
                "Use the https:// address. Plain http is allowed only on this machine "
                "(localhost, 127.0.0.1, ::1), for development.",
            )
    for key in ("client_secret", "private_key"):
        secret = entry.get(key)
        if isinstance(secret, str) and secret.strip().lower() in SECRET_PLACEHOLDERS:
            error(
                "E012",
                f"[{key!r}] is a placeholder ({secret!r}), not a secret.",
                "Paste the value from the provider's console, read from the environment "
                "(os.environ[...]) or a secrets file, never committed.",
            )
    key_text = entry.get("private_key")
    if isinstance(key_text, str) and key_text.strip() and "-----BEGIN" not in key_text:
        error(
            "E012",
            "['private_key'] is not a PEM key (a file name?).",
            "Give the key's text: Path(...).read_text(), or the private_key of the "
            "service account's JSON key file.",
        )
    return errors


def _insecure_url(url: str) -> str:
    """Why ``url`` may not carry tokens and secrets, or "" when it may."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return ""
    if parts.scheme != "http" or not parts.hostname:
        return "not an http(s) URL."
    host = parts.hostname
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return ""
    return "plain http sends the client secret and the tokens readable to the network."
