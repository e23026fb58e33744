"""The only reader of our settings: the ``MULTISMTP`` dict, with documented defaults.

One namespace keeps a site's ``settings.py`` tidy and lets the system checks report
unknown keys (typos) by name. Every getter reads settings on each call, so
``override_settings`` works in tests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _

from .exceptions import MultiSMTPConfigurationError

#: Purposes every site has. Add more with ``MULTISMTP["PURPOSES"]``.
BUILTIN_PURPOSES: dict[str, Any] = {
    "system": _("System"),
    "customer_service": _("Customer service"),
    "campaigns": _("Campaigns"),
}

DEFAULTS: dict[str, Any] = {
    # Extra purposes (account types): {"billing": "Billing"}; merged with the built-ins.
    "PURPOSES": {},
    # The purpose of mail that names none (password resets, mail_admins, ...).
    "DEFAULT_PURPOSE": "system",
    # Use the mailer's own host/port OPTIONS (MAILERS) or EMAIL_* settings when no account
    # matches a message, so the backend is a drop-in for Django's SMTP backend.
    "USE_FALLBACK_SERVER": True,
    # First back-off after a throttling reply; doubles on each consecutive one.
    "THROTTLE_BACKOFF": dt.timedelta(minutes=1),
    "THROTTLE_BACKOFF_MAX": dt.timedelta(hours=1),
    # Back-off after a daily-quota reply (Gmail 550 5.4.5, Microsoft SubmissionQuota...).
    "DAILY_QUOTA_BACKOFF": dt.timedelta(hours=24),
    # Unused: the fallback server's timeout is Django's (the timeout option or
    # EMAIL_TIMEOUT, None by default). Kept so settings naming it stay valid.
    "DEFAULT_TIMEOUT": 30,
    # Seconds a "Test connection" / "Test settings" / test message may take in all, whatever
    # the account's timeout: a person (a web worker) waits for it.
    "TEST_TIMEOUT": 15,
    # Write one DeliveryLog row per attempt.
    "DELIVERY_LOG": True,
    # The log's recipients column: "plain" addresses, "hashed" (searchable by the whole
    # address, unreadable in the table) or "off" (domains only).
    "LOG_RECIPIENTS": "plain",
    # Dotted path to a callable returning an aware datetime (tests, simulations).
    "CLOCK": None,
    # Self-service pages refuse hosts resolving to internal addresses unless allowed.
    "ALLOW_INTERNAL_HOSTS": False,
    # Verification codes: lifetime and attempts.
    "VERIFICATION_CODE_TTL": dt.timedelta(minutes=30),
    "VERIFICATION_MAX_ATTEMPTS": 5,
    # django-ratelimit rates for sending and confirming verification codes.
    "VERIFICATION_SEND_RATE": "5/h",
    "VERIFICATION_CONFIRM_RATE": "10/h",
    # The outbox. "retry": keep mail that cannot go out now (every account limited or
    # rate limited, or a temporary failure everywhere) and send it later; "always": queue
    # every message and let a worker send it; "off": raise instead of queueing.
    "OUTBOX": "retry",
    # In "retry" mode, also queue a message whose only failures need a person: a wrong
    # login, a TLS or certificate failure (a security mode that does not match the port),
    # an undecryptable password, another configuration error. Off by default: such a
    # send raises at once (or, under fail_silently, is not counted as sent) instead of
    # waiting for days for a fix nobody was told about.
    "OUTBOX_QUEUE_CONFIG_ERRORS": False,
    # Give up (status "failed") after this many passes that reached a server and failed.
    "OUTBOX_MAX_ATTEMPTS": 10,
    # ...or when a message is still not sent this long after it was queued (None: keep
    # trying), e.g. while every account it may use stays inactive or rate limited.
    "OUTBOX_MAX_AGE": dt.timedelta(days=3),
    # Wait before the next pass: doubles after each failed pass, up to the maximum.
    "OUTBOX_RETRY_BACKOFF": dt.timedelta(minutes=1),
    "OUTBOX_RETRY_BACKOFF_MAX": dt.timedelta(hours=2),
    # How long a worker owns the rows it claimed; a crashed worker's rows are picked up
    # again after this. Keep it well above the time one batch takes to send.
    "OUTBOX_LEASE": dt.timedelta(minutes=10),
    # Queued mail due for longer than this while no worker was seen in that time is
    # reported (verify_smtp_accounts, the admin): the site queues but runs no worker.
    # Keep it well above OUTBOX_POLL_INTERVAL and the time one batch takes.
    "OUTBOX_STALL_AFTER": dt.timedelta(minutes=15),
    # Rows one worker claims at a time.
    "OUTBOX_BATCH_SIZE": 100,
    # send_queued_mail --loop: pause between polls when nothing is due.
    "OUTBOX_POLL_INTERVAL": dt.timedelta(seconds=5),
    # Dotted path (or callable) run after a transaction that queued mail commits, e.g.
    # "django_multismtp.tasks.wake_django_tasks" or "django_multismtp.tasks.wake_celery".
    "OUTBOX_WAKE": None,
    # Connection slots: an account's max_connections is shared by every process and
    # machine. A process holds a lease on a slot per open connection, renews it while
    # the connection is open and gives it back on close; a slot whose lease ran out (its
    # process died) is free again. Keep it well above the pauses of a process that holds
    # a connection open (a looping worker closes its connections after 5 idle seconds).
    "CONNECTION_LEASE": dt.timedelta(minutes=2),
    # How long a send waits for a free slot of an account when no other account it may
    # use has one; then the message is deferred as "busy" (queued in "retry" mode).
    "CONNECTION_WAIT": dt.timedelta(seconds=10),
    # send_messages() works through a batch in slices of this many messages: each slice
    # is sent, logged and reported before the next is prepared, so memory stays flat
    # however long the batch, and database work per slice stays the same.
    "SEND_SLICE": 1000,
    # How messages are shared among accounts that are equally eligible for them (a pool:
    # same selection step, same priority, allowed to send the message's From): "spread"
    # (in proportion to each account's remaining quota), "round_robin" or "fill_first"
    # (the first until it fails or fills up). One policy for every purpose, or a dict
    # {purpose: policy} with "*" for the purposes it does not name. See docs/choosing.rst.
    "POOL_POLICY": "spread",
    # OAuth 2.0 apps shared by every mailbox of a provider: {"microsoft": {"client_id":
    # ..., "client_secret": ..., "tenant": ...}, "google": {...}, "<name>": {"token_url":
    # ..., "authorize_url": ..., "scopes": ...}}. An account's own values win.
    "OAUTH_PROVIDERS": {},
    # Refresh an access token this long before it expires.
    "OAUTH_REFRESH_MARGIN": dt.timedelta(minutes=5),
    # Seconds to wait for a provider's token endpoint.
    "OAUTH_HTTP_TIMEOUT": 10,
    # E-mail the owner and ADMINS when an account needs reconnecting (the
    # oauth_needs_reconnect signal is sent either way).
    "OAUTH_NOTIFY": True,
}

#: Values of MULTISMTP["OUTBOX"].
OUTBOX_MODES = ("retry", "always", "off")
#: Values of MULTISMTP["POOL_POLICY"] (and of the ``pool`` option and hint).
POOL_POLICIES = ("spread", "round_robin", "fill_first")


def user_settings() -> dict[str, Any]:
    value = getattr(settings, "MULTISMTP", {})
    return value if isinstance(value, dict) else {}


def get_setting(name: str) -> Any:
    """Return ``MULTISMTP[name]``, or its documented default."""
    if name not in DEFAULTS:
        raise KeyError(f"Unknown django-multismtp setting {name!r}")
    return user_settings().get(name, DEFAULTS[name])


def purposes() -> dict[str, Any]:
    """All purposes (value -> label): the built-ins plus ``MULTISMTP["PURPOSES"]``."""
    extra = get_setting("PURPOSES")
    return {**BUILTIN_PURPOSES, **(extra if isinstance(extra, dict) else {})}


def purpose_choices() -> list[tuple[str, Any]]:
    return list(purposes().items())


def default_purpose() -> str:
    return str(get_setting("DEFAULT_PURPOSE"))


def as_timedelta(value: Any) -> dt.timedelta:
    """Accept a timedelta or a number of seconds, as sites write either."""
    if isinstance(value, dt.timedelta):
        return value
    return dt.timedelta(seconds=float(value))


def get_timedelta(name: str) -> dt.timedelta:
    return as_timedelta(get_setting(name))


def outbox_mode() -> str:
    """ "retry", "always" or "off" (the checks report any other value)."""
    mode = get_setting("OUTBOX")
    if mode is False or mode is None:
        return "off"
    return str(mode) if mode in OUTBOX_MODES else "retry"


def test_timeout() -> float:
    """``MULTISMTP["TEST_TIMEOUT"]`` in seconds (a number or a timedelta)."""
    return as_timedelta(get_setting("TEST_TIMEOUT")).total_seconds()


def get_clock() -> Callable[[], dt.datetime] | None:
    clock = get_setting("CLOCK")
    if clock is None:
        return None
    if isinstance(clock, str):
        return import_string(clock)  # type: ignore[no-any-return]
    return clock  # type: ignore[no-any-return]


def pool_policy(purpose: str) -> str:
    """The pool policy of ``purpose`` (``MULTISMTP["POOL_POLICY"]``: one policy, or a
    dict by purpose with ``"*"`` for the rest); "spread" when unset. An unknown value
    raises: mail must not quietly go out by a rule nobody chose."""
    value = get_setting("POOL_POLICY")
    if isinstance(value, dict):
        value = value.get(purpose, value.get("*", DEFAULTS["POOL_POLICY"]))
    if value not in POOL_POLICIES:
        raise MultiSMTPConfigurationError(
            f'MULTISMTP["POOL_POLICY"] gives {value!r} for the purpose {purpose!r}: '
            f"use one of {', '.join(POOL_POLICIES)}."
        )
    return str(value)


def send_slice() -> int:
    """``MULTISMTP["SEND_SLICE"]``: messages per slice of a batch (at least 1)."""
    return max(int(get_setting("SEND_SLICE")), 1)


def oauth_provider_settings(name: str) -> dict[str, Any]:
    """``MULTISMTP["OAUTH_PROVIDERS"][name]``, or an empty dict."""
    providers = get_setting("OAUTH_PROVIDERS")
    value = providers.get(name) if isinstance(providers, dict) else None
    return dict(value) if isinstance(value, dict) else {}


LOG_RECIPIENT_MODES = ("plain", "hashed", "off")


def log_recipients_mode() -> str:
    """``LOG_RECIPIENTS``, checked (an unknown value logs nothing rather than too much)."""
    value = get_setting("LOG_RECIPIENTS")
    return value if value in LOG_RECIPIENT_MODES else "off"
