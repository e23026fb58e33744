"""Never display a secret field in the admin (:class:`SecretFieldsMixin`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext
from django.views.decorators.debug import sensitive_post_parameters

from ..fields import Undecryptable, secret_fields


class SecretFieldsMixin:
    """Never display a secret field (``fields.secret_fields``), in any admin mode.

    Wherever the admin would show a secret read-only (the view-only page of staff
    without the change permission, ``readonly_fields``, a ``has_change_permission``
    that says no, list columns), it shows whether one is set instead. The add/change
    view marks the secrets' POST parameters sensitive, so error reports show stars.
    Every model admin of the app uses this, so a new secret field is covered at once.
    """

    model: Any

    def _secret_displays(self) -> dict[str, Callable[[Any], str]]:
        displays: dict[str, Callable[[Any], str]] | None = self.__dict__.get("_secret_display")
        if displays is None:
            displays = {
                f.name: _secret_status(f.name, f.verbose_name) for f in secret_fields(self.model)
            }
            self.__dict__["_secret_display"] = displays
        return displays

    def _view_only(self, request: HttpRequest, obj: Any) -> bool:
        # The change page of an object the user may not change shows every field read-only.
        return obj is not None and not self.has_change_permission(request, obj)  # type: ignore[attr-defined]

    def _swap(self, fields: Sequence[Any], read_only: set[str]) -> list[Any]:
        """Secrets shown read-only become their status; a status whose secret is an
        input (or already listed) is dropped."""
        displays = self._secret_displays()
        status_of = {display: name for name, display in displays.items()}
        swapped: list[Any] = []
        for item in fields:
            if isinstance(item, (list, tuple)):
                swapped.append(tuple(self._swap(item, read_only)))
                continue
            if isinstance(item, str) and item in read_only:
                item = displays[item]
            elif item in status_of and status_of[item] not in read_only:
                continue
            if not (item in status_of and item in swapped):
                swapped.append(item)
        return swapped

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Every status is read-only (that keeps it out of the form); it is shown only
        # where get_fieldsets() puts it instead of the secret.
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return fields + [d for d in self._secret_displays().values() if d not in fields]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)  # type: ignore[misc]
        displays = self._secret_displays()
        if not displays:
            return fieldsets
        # self.get_readonly_fields: what the whole admin (subclasses too) makes read-only.
        readonly = self.get_readonly_fields(request, obj)
        view_only = self._view_only(request, obj)
        read_only = {name for name in displays if view_only or name in readonly}
        return [
            (title, {**options, "fields": self._swap(options["fields"], read_only)})
            for title, options in fieldsets
        ]

    def get_list_display(self, request: HttpRequest) -> Any:
        secrets = set(self._secret_displays())
        return self._swap(super().get_list_display(request), secrets)  # type: ignore[misc]

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        view = super().changeform_view  # type: ignore[misc]
        names = list(self._secret_displays())
        inlines = getattr(self, "inlines", ())
        if any(secret_fields(inline.model) for inline in inlines):
            # Inline forms' parameters are prefixed ("smtp_accounts-0-password"): hide all.
            view = sensitive_post_parameters()(view)
        elif names:
            view = sensitive_post_parameters(*names)(view)
        return view(request, object_id, form_url, extra_context)  # type: ignore[no-any-return]


def _secret_status(name: str, label: Any) -> Callable[[Any], str]:
    """A read-only display of a secret: whether one is stored, never what it is."""

    @admin.display(description=label)
    def status(obj: Any) -> str:
        value = getattr(obj, name, None)
        if isinstance(value, Undecryptable):
            return gettext("set, but the current FERNET_KEYS cannot decrypt it")
        return gettext("set") if value else gettext("not set")

    status.__name__ = f"{name}_status"
    return status
