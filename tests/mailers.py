"""Configure mailers in tests, written once in MAILERS style for every Django version.

The test runner swaps every mailer for locmem, so tests that send for real set our
backend explicitly. On Django < 6.1 a MAILERS alias becomes EMAIL_BACKEND (default) or
``get_connection(**OPTIONS)`` (named aliases), as django-anymail's test utils do.
"""

from __future__ import annotations

from typing import Any

import django
import pytest
from django.core import mail

#: Tests that build our backend directly (not through mail.mailers), as Django's own
#: SMTP backend tests do under ignore_warnings: Django 6.1 deprecates that, for its
#: backend and ours alike (test_backend_contract.py checks that ours warns).
direct_construction = pytest.mark.filterwarnings(
    "ignore:Directly creating EmailBackend instances is deprecated:PendingDeprecationWarning"
)

OURS = "django_multismtp.backends.EmailBackend"
DJANGO_61 = django.VERSION >= (6, 1)


def use_mailers(settings: Any, **aliases: dict[str, Any]) -> None:
    """``use_mailers(settings, default={"OPTIONS": {...}}, campaigns={...})``."""
    config = {alias: {"BACKEND": OURS, **value} for alias, value in aliases.items()}
    config.setdefault("default", {"BACKEND": OURS})
    if DJANGO_61:
        # Django 6.1 requires a host under MAILERS; a mailer without one sends through
        # accounts only (before 6.1 the EMAIL_HOST default, localhost, is the fallback).
        for value in config.values():
            options = value.setdefault("OPTIONS", {})
            if "host" not in options:
                options.setdefault("fallback", False)
        settings.MAILERS = config
    else:
        settings.EMAIL_BACKEND = config["default"]["BACKEND"]
        settings.TEST_MAILERS = config


def get_mailer(alias: str = "default") -> Any:
    """The backend for ``alias``: ``mail.mailers[alias]`` or ``get_connection(**OPTIONS)``."""
    if DJANGO_61:
        return mail.mailers[alias]
    from django.conf import settings

    config = getattr(settings, "TEST_MAILERS", {"default": {"BACKEND": OURS}})[alias]
    return mail.get_connection(config["BACKEND"], **config.get("OPTIONS", {}))


def send(message: Any, using: str = "default") -> int:
    """``message.send(using=alias)`` on 6.1, ``connection=`` before."""
    if DJANGO_61:
        return int(message.send(using=using))
    message.connection = get_mailer(using)
    return int(message.send())
