""" "My SMTP settings": staff users manage, test and verify their own SMTP account.

Every lookup is ``owner=request.user``, so another user's account is a 404 (never a
403 that would confirm it exists). Hosts typed here must resolve to public addresses
(``netguard``) unless ``ALLOW_INTERNAL_HOSTS`` is set, and the saved account keeps that
restriction when it connects.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from . import ops, verification
from .exposure import security_warnings
from .fields import secret_field_names
from .forms import ConfirmCodeForm, MySmtpSettingsForm, SendCodeForm
from .models import SmtpAccount
from .throttling import too_many

TEMPLATE = "django_multismtp/my_settings.html"
#: POST parameters that carry a secret: error reports show stars for them.
SECRET_POST_PARAMETERS = secret_field_names(SmtpAccount)


def _own(request: HttpRequest, pk: int) -> SmtpAccount:
    return get_object_or_404(SmtpAccount, pk=pk, owner=request.user.pk)


def _page(request: HttpRequest, account: SmtpAccount | None, **context: Any) -> HttpResponse:
    accounts = SmtpAccount.objects.filter(owner=request.user.pk).order_by("pk")
    return TemplateResponse(
        request,
        TEMPLATE,
        {
            # The admin's header, user links and site title: the page extends its base.
            **admin.site.each_context(request),
            "title": _("My SMTP settings"),
            "account": account,
            "accounts": accounts,
            # The page shows security and certificate checks: warn as the admin does.
            "security_warnings": security_warnings(
                account.host, account.security, account.verify_certificates
            )
            if account is not None
            else [],
            "send_form": context.pop("send_form", None)
            or SendCodeForm(initial={"recipient": getattr(request.user, "email", "")}),
            "confirm_form": context.pop("confirm_form", None) or ConfirmCodeForm(),
            **context,
        },
    )


@sensitive_post_parameters(*SECRET_POST_PARAMETERS)
@staff_member_required
@require_http_methods(["GET", "POST"])
def my_settings(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    if pk is None:
        first = SmtpAccount.objects.filter(owner=request.user.pk).order_by("pk").first()
        if first is not None and request.method == "GET" and "new" not in request.GET:
            return HttpResponseRedirect(reverse("django_multismtp:edit", args=[first.pk]))
    account = _own(request, pk) if pk is not None else None
    form = MySmtpSettingsForm(request.POST or None, instance=account, user=request.user)
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        messages.success(request, _("Your SMTP settings were saved."))
        return HttpResponseRedirect(reverse("django_multismtp:edit", args=[saved.pk]))
    return _page(request, account, form=form)


@staff_member_required
@require_POST
def test_settings(request: HttpRequest, pk: int) -> HttpResponse:
    account = _own(request, pk)
    result = ops.test_connection(account)
    if result.ok:
        messages.success(request, _("The settings work: %(reply)s") % {"reply": result.reply})
    else:
        messages.error(
            request,
            _("The test failed (%(outcome)s%(code)s: %(reply)s). %(hint)s")
            % {
                "outcome": result.outcome,
                "code": f" {result.code}" if result.code else "",
                "reply": result.reply,
                "hint": result.hint,
            },
        )
    return HttpResponseRedirect(reverse("django_multismtp:edit", args=[account.pk]))


@staff_member_required
@require_POST
def send_code(request: HttpRequest, pk: int) -> HttpResponse:
    account = _own(request, pk)
    send_form = SendCodeForm(request.POST)
    form = MySmtpSettingsForm(instance=account, user=request.user)
    if not send_form.is_valid():
        return _page(request, account, form=form, send_form=send_form)
    if too_many(request, "send"):
        send_form.add_error(None, _("Too many codes sent recently. Wait a while and try again."))
        return _page(request, account, form=form, send_form=send_form)
    outcome = verification.send_code(
        account, send_form.cleaned_data["recipient"], user=request.user
    )
    if outcome.result.ok:
        messages.success(
            request,
            _("A code was sent to %(to)s. Paste it below to confirm.")
            % {"to": send_form.cleaned_data["recipient"]},
        )
    else:
        messages.error(
            request,
            _("The message could not be sent (%(reply)s). %(hint)s")
            % {"reply": outcome.result.reply, "hint": outcome.result.hint},
        )
    return HttpResponseRedirect(reverse("django_multismtp:edit", args=[account.pk]))


@staff_member_required
@require_POST
def confirm(request: HttpRequest, pk: int) -> HttpResponse:
    account = _own(request, pk)
    confirm_form = ConfirmCodeForm(request.POST)
    form = MySmtpSettingsForm(instance=account, user=request.user)
    if confirm_form.is_valid() and confirm_form.confirm(request, account):
        messages.success(request, verification.Confirmation.VERIFIED.message)
        return HttpResponseRedirect(reverse("django_multismtp:edit", args=[account.pk]))
    return _page(request, account, form=form, confirm_form=confirm_form)
