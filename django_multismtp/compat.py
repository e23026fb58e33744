"""The only module that branches on ``django.VERSION``.

Django 5.2, 6.0 and 6.1 differ in how a message becomes bytes, where the email
configuration lives (``EMAIL_*`` settings or 6.1's ``MAILERS``) and which warning
classes exist. Everything else in the package asks this module and stays version-free.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.timezone import get_current_timezone

if TYPE_CHECKING:
    from django.core.mail import EmailMessage

DJANGO_61 = django.VERSION >= (6, 1)
DJANGO_60 = django.VERSION >= (6, 0)

if TYPE_CHECKING:

    class InvalidMailer(ImproperlyConfigured):
        def __init__(self, msg: str, *, alias: str | None = None) -> None: ...

    class EmailSettingsWarning(PendingDeprecationWarning): ...

else:
    try:
        from django.core.mail import InvalidMailer
    except ImportError:  # Django < 6.1

        class InvalidMailer(ImproperlyConfigured):
            """Stand-in for Django 6.1's ``InvalidMailer`` (a configuration error)."""

            def __init__(self, msg, *, alias=None):
                if alias is not None:
                    msg = f"MAILERS[{alias!r}]: {msg}"
                super().__init__(msg)

    try:  # Django >= 6.0.9
        from django.utils.deprecation import RemovedInDjango2028Warning as EmailSettingsWarning
    except ImportError:
        try:  # Django 6.0.0 - 6.0.8
            from django.utils.deprecation import RemovedInDjango70Warning as EmailSettingsWarning
        except ImportError:  # Django 5.2: nothing is deprecated yet

            class EmailSettingsWarning(PendingDeprecationWarning):
                """Never raised: this Django has no deprecated email settings."""


def render_message(message: EmailMessage) -> bytes:
    """Render ``message`` to the bytes that go on the wire, CRLF line endings.

    Django 6.0 moved to :mod:`email.policy` based messages; 5.2 still builds legacy
    ``SafeMIME*`` objects. Both produce the same wire format here. ``Bcc`` is never a
    header: Django keeps it in ``recipients()`` only.
    """
    built: Any = message.message(policy=email.policy.SMTP) if DJANGO_60 else message.message()
    if DJANGO_60:
        return bytes(built.as_bytes())
    return bytes(built.as_bytes(linesep="\r\n"))


#: Django 5.2 renders through ``SafeMIMEText`` and the ``compat32`` policy (see
#: :mod:`plainmail` for what differs in the bytes).
LEGACY_MIME = not DJANGO_60


def mail_date() -> str:
    """The Date header's value as this Django line's ``message()`` writes it now."""
    if LEGACY_MIME:
        return email.utils.formatdate(localtime=settings.EMAIL_USE_LOCALTIME)
    zone = get_current_timezone() if settings.EMAIL_USE_LOCALTIME else dt.UTC
    return email.utils.format_datetime(dt.datetime.now(zone))


def mailers_configured() -> bool:
    """True when the site configures email through Django 6.1's ``MAILERS``."""
    return DJANGO_61 and hasattr(settings, "MAILERS")


@contextmanager
def quiet_email_settings() -> Iterator[None]:
    """Read deprecated ``EMAIL_*`` settings without repeating Django's 6.1 warning.

    The site chose ``EMAIL_BACKEND`` and Django already warned about it at start-up;
    reading ``EMAIL_HOST`` for the fallback server must not warn once per message.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmailSettingsWarning)
        yield


def email_setting(name: str, default: Any = None) -> Any:
    """Read one ``EMAIL_*`` setting; never call this when :func:`mailers_configured`."""
    with quiet_email_settings():
        return getattr(settings, name, default)


def configured_backends() -> dict[str, tuple[str, dict[str, Any]]]:
    """Map each configured mailer alias to ``(backend path, options)``.

    Under ``MAILERS`` this is every alias; otherwise the single ``EMAIL_BACKEND`` as
    ``"default"`` with no options (on 5.2/6.0 options come from ``get_connection()``).
    """
    if mailers_configured():
        result: dict[str, tuple[str, dict[str, Any]]] = {}
        for alias, config in settings.MAILERS.items():
            if not isinstance(config, dict):
                continue  # Django itself reports a malformed entry
            options = config.get("OPTIONS")
            backend = config.get("BACKEND", "django.core.mail.backends.smtp.EmailBackend")
            result[alias] = (str(backend), dict(options) if isinstance(options, dict) else {})
        return result
    return {"default": (str(email_setting("EMAIL_BACKEND", "")), {})}


#: Django 6.1's words for constructing its SMTP backend directly (not via mail.mailers).
DIRECT_CONSTRUCTION = (
    "Directly creating EmailBackend instances is deprecated. Use mail.mailers instead."
)


def warn_direct_construction() -> None:
    """Warn as Django 6.1's SMTP backend does when built without ``mail.mailers``.

    Only for callers outside Django and this package: ``get_connection()`` warns on its
    own, and our worker and test backend are not the user's deprecated code. Older
    Djangos deprecate nothing here.
    """
    if not DJANGO_61:
        return
    from django.utils.deprecation import warn_about_external_use

    warn_about_external_use(
        DIRECT_CONSTRUCTION,
        EmailSettingsWarning,
        skip_frames=1,  # the backend's __init__: its caller decides
        internal_modules=("django", "django_multismtp"),
    )


#: Django 6.1's admin writes breadcrumbs as ``<ol class="breadcrumbs"><li>…`` and styles
#: only that; earlier lines write ``<div class="breadcrumbs">`` with ``›`` between links.
ADMIN_BREADCRUMBS_AS_LIST = DJANGO_61
