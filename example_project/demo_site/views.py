"""The demo's two pages: send a message as each purpose or user, and the sink's log."""

from __future__ import annotations

from typing import Any

import django
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from django_multismtp.exceptions import MultiSMTPError
from django_multismtp.hints import sending_as
from django_multismtp.models import SmtpAccount

from . import oauth_server
from .demo_data import OAUTH_ACCOUNT
from .sink import read_log

#: Button value -> label. Each is sent a different way; see ``_send``.
BUTTONS = {
    "system": "Send as system",
    "customer_service": "Send as customer service",
    "campaigns": "Send as campaigns",
    "me": "Send as me (logged-in user)",
    "alice": "Send as alice",
    "burst": "Send 40 as campaigns (limit: 30 a minute)",
    "oauth": "Send through the OAuth mailbox",
}
BURST = 40
RESULTS_KEPT = 10


class SendForm(forms.Form):
    recipient = forms.EmailField(initial="someone@example.test")


def _campaigns_connection() -> Any:
    """A backend pinned to the campaigns purpose by its options (the mailer's OPTIONS)."""
    if django.VERSION >= (6, 1):
        return mail.mailers["campaigns"]  # type: ignore[attr-defined]
    return mail.get_connection(purpose="campaigns")


def _send(request: HttpRequest, button: str, recipient: str) -> tuple[mail.EmailMessage, str]:
    """Send one message the way ``button`` asks; return it and how it was routed."""
    username = request.user.get_username()
    message = mail.EmailMessage(
        subject=f"Demo: {BUTTONS[button].lower()} ({username})",
        body=f"Sent from the django-multismtp demo by {username} with '{BUTTONS[button]}'.\n",
        to=[recipient],  # no from_email: DEFAULT_FROM_EMAIL, replaced by the account's own
    )
    if button == "burst":
        burst = [message] + [
            mail.EmailMessage(subject=f"{message.subject} #{n}", body=message.body, to=[recipient])
            for n in range(2, BURST + 1)
        ]
        _campaigns_connection().send_messages(burst)
        outcomes = [m.multismtp_status.outcome for m in burst]  # type: ignore[attr-defined]
        how = (
            f"one send_messages() of {BURST}: {outcomes.count('sent')} sent now, "
            f"{outcomes.count('queued')} queued in the outbox for the worker"
        )
        return message, how
    if button == "campaigns":
        if django.VERSION >= (6, 1):
            how = 'mailers["campaigns"] (OPTIONS purpose="campaigns")'
        else:
            how = 'get_connection(purpose="campaigns")'
        _campaigns_connection().send_messages([message])
        return message, how
    if button == "me":
        how, hints = "sending_as(user=request.user)", {"user": request.user}
    elif button == "alice":
        how, hints = 'sending_as(user="alice")', {"user": "alice"}
    else:
        # "oauth" too: the purpose of the Demo OAuth mailbox account (XOAUTH2).
        how, hints = f'sending_as(purpose="{button}")', {"purpose": button}
    with sending_as(**hints):
        message.send()
    return message, how


@login_required
def send_page(request: HttpRequest) -> HttpResponse:
    form = SendForm(request.POST or None)
    if request.method == "POST":
        button = request.POST.get("send_as", "")
        if button not in BUTTONS:
            messages.error(request, "Choose one of the send buttons.")
        elif form.is_valid():
            _send_and_report(request, button, form.cleaned_data["recipient"])
            return redirect("send")
    accounts = SmtpAccount.objects.select_related("owner").order_by("port", "name")
    return render(
        request,
        "demo_site/send.html",
        {
            "form": form,
            "buttons": BUTTONS.items(),
            "accounts": accounts,
            "results": request.session.get("demo_results", []),
            "oauth_account": SmtpAccount.objects.filter(name=OAUTH_ACCOUNT).first(),
            "oauth_mailbox": oauth_server.MAILBOX,
            "oauth_password": oauth_server.MAILBOX_PASSWORD,
        },
    )


def _send_and_report(request: HttpRequest, button: str, recipient: str) -> None:
    """Send, then tell the user which account carried the message (errors as messages)."""
    result: dict[str, Any] = {
        "time": timezone.now().strftime("%H:%M:%S"),
        "button": BUTTONS[button],
        "user": request.user.get_username(),
    }
    try:
        message, how = _send(request, button, recipient)
    except MultiSMTPError as exc:
        result.update(how="", account=exc.account or "", outcome="failed", error=str(exc))
        text = f"{BUTTONS[button]}: not sent. {exc}"
        if exc.hint and exc.hint not in text:
            text += f" Hint: {exc.hint}"
        messages.error(request, text)
    except (ImproperlyConfigured, ValueError, OSError) as exc:
        result.update(how="", account="", outcome="failed", error=str(exc))
        messages.error(request, f"{BUTTONS[button]}: not sent. {exc}")
    else:
        status = getattr(message, "multismtp_status", None)
        account = (
            SmtpAccount.objects.filter(pk=status.account_id).first()
            if status is not None and status.account_id
            else None
        )
        result.update(
            how=how,
            account=status.account if status else "",
            port=account.port if account else "",
            login=account.username if account else "",
            outcome=status.outcome if status else "sent",
            error=status.error if status else "",
        )
        where = f" (port {account.port}, AUTH login {account.username})" if account else ""
        verb = (
            "queued (the outbox worker sends it soon)" if result["outcome"] == "queued" else "sent"
        )
        messages.success(
            request,
            f"{BUTTONS[button]}: {verb} with {how} through the account "
            f"\u201c{result['account']}\u201d{where}.",
        )
    results = [result, *request.session.get("demo_results", [])][:RESULTS_KEPT]
    request.session["demo_results"] = results


@login_required
def sink_page(request: HttpRequest) -> HttpResponse:
    received = list(reversed(read_log(settings.DEMO_SINK_LOG)))
    for entry in received:
        entry["when"] = str(entry.get("time", "")).replace("T", " ")[:19]
    return render(
        request,
        "demo_site/sink.html",
        {"received": received, "log_path": settings.DEMO_SINK_LOG},
    )
