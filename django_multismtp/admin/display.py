"""Shared column helpers: coloured status badges and the stalled-worker banner."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from .. import clock, stall


def badge(key: str, colour: str, label: Any, title: str = "") -> str:
    return format_html(
        '<span class="multismtp-status multismtp-status-{}" style="color:#fff;'
        'background:{};padding:2px 6px;border-radius:8px;white-space:nowrap" title="{}">'
        "{}</span>",
        key,
        colour,
        title,
        label,
    )


def truncated(text: str, width: int) -> str:
    """``text`` cut between words to ``width`` characters, with the whole of it as a
    tooltip: long subjects and replies must not push the decisive columns off a
    1366-pixel screen."""
    text = " ".join((text or "").split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if " " in cut and text[width - 1] != " ":
        cut = cut[: cut.rfind(" ")]
    return format_html(
        '<span title="{}" style="white-space:nowrap">{}\u2026</span>', text, cut.rstrip()
    )


def timestamp(value: Any) -> str:
    """A compact local time with seconds, on one line (attempts share minutes)."""
    if value is None:
        return "-"
    return format_html(
        '<span style="white-space:nowrap">{}</span>',
        timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S"),
    )


def warn_if_stalled(request: HttpRequest) -> None:
    """A banner on the account and outbox lists when queued mail waits with no worker
    (see :mod:`django_multismtp.stall`): a site that queues must run one."""
    if request.method != "GET":
        return
    stuck = stall.stalled(clock.now())
    if stuck is not None:
        messages.error(request, stuck.message())
