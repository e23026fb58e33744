"""A rejected password gets the advice of the account's provider, not always Gmail's.

The preset an account was set up with is stored on it (field ``preset``); the hint is
chosen where the failure is recorded for that account (``state.account_hint``), for the
admin's test results, ``verify_smtp_accounts`` and the account's last error alike.
"""

from __future__ import annotations

import pytest

from django_multismtp import ops, state
from django_multismtp.models import SmtpAccount
from django_multismtp.replies import CREDENTIAL_HINTS, HINTS, classify_reply
from tests.factories import SmtpAccountFactory
from tests.test_admin import ADD, add_data, form_errors, provider_dns  # noqa: F401

pytestmark = pytest.mark.django_db

WRONG_PASSWORD = classify_reply(535, "5.7.8 Authentication credentials invalid", stage="AUTH")


@pytest.mark.parametrize(
    ("preset", "host", "words"),
    [
        ("sendgrid", "smtp.sendgrid.net", "literally 'apikey'"),
        ("microsoft365", "smtp.office365.com", "basic authentication (SMTP AUTH) may be disabled"),
        ("gmail", "smtp.gmail.com", "App Password"),
    ],
)
def test_a_wrong_password_gets_the_providers_hint(preset, host, words):
    account = SmtpAccountFactory(preset=preset, host=host)
    assert WRONG_PASSWORD.hint == HINTS["credentials"]
    hint = state.account_hint(account, WRONG_PASSWORD)
    assert words in hint and hint == CREDENTIAL_HINTS[preset]
    assert words in ops._result(account, WRONG_PASSWORD, "", 0.1, ok="ok").hint
    state.record_failure(account, WRONG_PASSWORD, account.created_at)
    account.refresh_from_db()
    assert words in account.last_error


def test_without_a_preset_or_on_another_host_the_generic_hint_stays():
    plain = SmtpAccountFactory(host="mail.example.test")
    moved = SmtpAccountFactory(preset="sendgrid", host="relay.example.test")
    assert state.account_hint(plain, WRONG_PASSWORD) == HINTS["credentials"]
    assert state.account_hint(moved, WRONG_PASSWORD) == HINTS["credentials"]


def test_other_failures_keep_their_own_hint():
    account = SmtpAccountFactory(preset="sendgrid", host="smtp.sendgrid.net")
    busy = classify_reply(451, "4.3.0 Mailbox busy")
    assert state.account_hint(account, busy) == busy.hint


def test_the_admin_stores_the_preset(admin_client, provider_dns):  # noqa: F811
    data = add_data(preset="gmail", host="", port="25", security="none", auth_method="auto")
    response = admin_client.post(ADD, data)
    assert response.status_code == 302, form_errors(response)
    assert SmtpAccount.objects.get(name="Outgoing").preset == "gmail"
