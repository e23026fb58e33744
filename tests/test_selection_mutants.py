"""Account selection: the cases mutation testing found no test for (``make mutate``).

Same pure setting as ``test_selection.py``: unsaved accounts, no database.
"""

from __future__ import annotations

import pytest

from django_multismtp.exceptions import UnknownAccount
from django_multismtp.models import SmtpAccount
from tests.test_selection import SITE_FROM, account, pick


def pks(accounts: list[SmtpAccount]) -> list[int | None]:
    return [a.pk for a in accounts]


def test_accounts_a_user_is_default_for_are_tried_by_priority():
    accounts = [
        account(1, default_for_ids={7}, priority=20),
        account(2, default_for_ids={7}, priority=10),
        account(3, default_for_ids={7}, priority=10),
    ]
    choice = pick(accounts, user_id=7)
    assert choice.step == "user"
    assert pks(choice.candidates)[:3] == [2, 3, 1]


def test_an_account_loaded_without_its_default_for_list_is_nobodys_default():
    loose = SmtpAccount(pk=1, name="loose", purpose="system", from_email="a@accounts.test")
    choice = pick([loose], user_id=7, uses_default_from=True, from_address=SITE_FROM)
    assert choice.step == "default"
    assert pks(choice.candidates) == [1]


def test_no_account_at_all_sends_through_the_fallback_server():
    choice = pick([], uses_default_from=True, from_address=SITE_FROM)
    assert choice.use_fallback
    assert choice.candidates == []
    choice = pick([account(1, is_active=False)], user_id=7, uses_default_from=True)
    assert choice.use_fallback


def test_a_numeric_account_hint_is_a_primary_key_even_if_an_account_is_named_so():
    accounts = [account(1, name="2"), account(2, name="billing")]
    assert pks(pick(accounts, account_ref=2).candidates)[:1] == [2]
    # Spelled as text it is refused, never read as the account called "2" (a name of
    # digits cannot be made; this one predates the guard).
    with pytest.raises(UnknownAccount, match="text made of digits"):
        pick(accounts, account_ref="2")


def test_an_unknown_account_hint_says_what_to_check():
    with pytest.raises(UnknownAccount) as caught:
        pick([account(1)], account_ref="nope")
    assert str(caught.value) == (
        "No SMTP account is named 'nope'. Check the account hint (name or id)."
    )


def test_accounts_of_another_purpose_leave_plain_mail_to_the_fallback_server():
    billing = account(1, purpose="billing")
    choice = pick([billing], uses_default_from=True, from_address=SITE_FROM)
    assert choice.use_fallback
    assert choice.candidates == []
    choice = pick([billing], from_address="nobody@elsewhere.test")
    assert choice.use_fallback
