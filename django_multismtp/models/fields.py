"""Columns that hold what a server said: the guard at the storage layer.

Reply text and reply codes come from servers nobody vouches for. The delivery engine,
the outbox and the account state clean them where they come in
(:func:`~django_multismtp.safetext.safe_text`), and these fields clean them again on
every way into the database (``save()``, ``update()``, ``bulk_update()`` and the bulk
inserts of :mod:`django_multismtp.bulk` all go through ``get_prep_value``), so one
forgotten call cannot make a batch's write fail: text becomes valid, NUL-free and
bounded; a code that is not an SMTP reply code (-1 from a malformed reply, 999) is stored
as NULL.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from ..safetext import MAX_TEXT, safe_text


class ReplyTextField(models.TextField):  # type: ignore[type-arg]
    """Text from a server (or built around it): stored valid, without NUL, bounded."""

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or hasattr(value, "resolve_expression"):
            return value
        return safe_text(value, MAX_TEXT)


class ReplyCodeField(models.PositiveIntegerField):  # type: ignore[type-arg]
    """An SMTP reply code (200-599), or NULL when the server gave no valid one."""

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or hasattr(value, "resolve_expression"):
            return value
        return value if 200 <= value < 600 else None
