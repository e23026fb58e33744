"""Shared action plumbing: refuse forged action selections with a message instead of a
server error."""

from __future__ import annotations

import re
from typing import Any

from django.contrib import messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext


def _valid_selection(request: HttpRequest) -> bool:
    """Are the selected rows of an action primary keys? Django's ``pk__in`` query fails
    with a server error on anything else (ValueError, or OverflowError on SQLite)."""
    return all(
        re.fullmatch(r"[0-9]{1,19}", value) and int(value) < 2**63
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME)
    )


def _refuse_selection(model_admin: Any, request: HttpRequest) -> None:
    model_admin.message_user(
        request, gettext("The selection is not valid. No items have been changed."), messages.ERROR
    )


class ValidSelectionMixin:
    """Refuse forged action selections with a message instead of a server error."""

    def response_action(
        self, request: HttpRequest, queryset: Any, **kwargs: Any
    ) -> HttpResponse | None:
        # **kwargs: Django 6.1 passes action_location.
        if not _valid_selection(request):
            _refuse_selection(self, request)
            return None
        return super().response_action(request, queryset, **kwargs)  # type: ignore[misc,no-any-return]
