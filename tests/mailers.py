"""Configure mailers in tests, written once in MAILERS style for every Django version.

The test runner swaps every mailer for locmem, so tests that send for real set our
backend explicitly. On Django < 6.1 a MAILERS alias becomes EMAIL_BACKEND (default) or
``get_connection(**OPTIONS)`` (named aliases), as django-anymail's test utils do.
"""

from __future__ import annotations

from typing import Any

import django
from django.core import mail

OURS = "django_multismtp.backends.EmailBackend"
DJANGO_61 = django.VERSION >= (6, 1)


def use_mailers(settings: Any, **aliases: dict[str, Any]) -> None:
    """``use_mailers(settings, default={"OPTIONS": {...}}, campaigns={...})``."""
    config = {alias: {"BACKEND": OURS, **value} for alias, value in aliases.items()}
    config.setdefault("default", {"BACKEND": OURS})
    if DJANGO_61:
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
