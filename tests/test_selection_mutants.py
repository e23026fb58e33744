"""Account selection: the cases mutation testing found no test for (``make mutate``).

Same pure setting as ``test_selection.py``: unsaved accounts, no database.
"""

from __future__ import annotations

import pytest

from django_multismtp.exceptions import AccountNotAllowed, UnknownAccount
from django_multismtp.models import SmtpAccount
from django_multismtp.models.oauth import OAuthConnection, OAuthState
from tests.test_selection import FROM, SITE_FROM, account, pick, skipped


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


# -- what a bad account hint is told ---------------------------------------------------------


def test_an_unsaved_account_as_hint_is_refused_with_what_to_do():
    unsaved = SmtpAccount(name="draft", purpose="system", from_email="a@accounts.test")
    with pytest.raises(UnknownAccount) as caught:
        pick([account(1)], account_ref=unsaved)
    assert str(caught.value) == "The account hint 'draft' is an unsaved account: save it first."


def test_a_hint_of_digits_says_to_pass_the_number():
    with pytest.raises(UnknownAccount) as caught:
        pick([account(1), account(2, name="billing")], account_ref=" 2 ")
    assert str(caught.value) == (
        "The account hint ' 2 ' is text made of digits. Account names are never all digits; "
        "to name the account with id 2, pass the number 2 (an int), or the account itself."
    )


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            1.5,
            "The account hint 1.5 is neither an SmtpAccount, its id (an int) nor its name "
            "(a string).",
        ),
        (
            True,
            "The account hint True is neither an SmtpAccount, its id (an int) nor its name "
            "(a string).",
        ),
        (9, "No SMTP account with id 9 exists. Check the account hint (name or id)."),
        (
            SmtpAccount(pk=9, name="gone", purpose="system"),
            "The SMTP account 'gone' (id 9) no longer exists.",
        ),
    ],
    ids=["float", "bool", "unknown-id", "deleted-account"],
)
def test_a_hint_that_names_no_account_says_why(ref, message):
    with pytest.raises(UnknownAccount) as caught:
        pick([account(1), account(2, name="billing")], account_ref=ref)
    assert str(caught.value) == message


def test_someone_elses_personal_account_as_hint_says_how_to_send():
    personal = account(1, name="olga", owner_id=7)
    with pytest.raises(AccountNotAllowed) as caught:
        pick([personal, account(2)], account_ref="olga", user_id=8)
    assert str(caught.value) == (
        "The SMTP account 'olga' is personal: it only sends mail sent as its owner. Send the "
        "message as that user (the user hint), or name a shared account."
    )


# -- which accounts share the mail (the pool) --------------------------------------------------


def test_equally_eligible_accounts_share_the_mail_and_a_worse_priority_does_not():
    accounts = [account(pk, allowed_senders="example.org", priority=10) for pk in (1, 2, 3)]
    accounts.append(account(4, allowed_senders="example.org", priority=20))
    choice = pick(accounts, from_address=FROM)
    assert choice.step == "from"
    assert pks(choice.candidates) == [1, 2, 3, 4]
    assert choice.pool == 3


def test_a_better_priority_sends_alone():
    accounts = [
        account(1, allowed_senders="example.org", priority=10),
        account(2, allowed_senders="example.org", priority=20),
    ]
    assert pick(accounts, from_address=FROM).pool == 1


def test_mail_with_the_site_from_is_shared_by_the_default_purposes_accounts():
    accounts = [account(1), account(2)]
    choice = pick(accounts, uses_default_from=True, from_address=SITE_FROM)
    assert choice.step == "default"
    assert choice.pool == 2


def test_a_purpose_pool_never_widens_who_may_send_the_from():
    allowed = account(1, purpose="billing", allowed_senders="example.org")
    not_allowed = account(2, purpose="billing")
    choice = pick([not_allowed, allowed], purpose="billing", from_address=FROM)
    assert pks(choice.candidates)[:2] == [1, 2]
    assert choice.pool == 1
    both_allowed = [allowed, account(3, purpose="billing", allowed_senders="example.org")]
    assert pick(both_allowed, purpose="billing", from_address=FROM).pool == 2


def test_a_purpose_account_that_may_not_send_the_from_shares_with_nobody():
    accounts = [account(1, purpose="billing"), account(2, purpose="billing")]
    choice = pick(accounts, purpose="billing", from_address=FROM)
    assert pks(choice.candidates) == [1, 2]
    assert choice.pool == 1


# -- OAuth accounts without a connection are skipped -----------------------------------------


def oauth_account(pk: int, method: str, connection: OAuthConnection | None) -> SmtpAccount:
    """An OAuth account as the engine loads it: its connection fetched along with it
    (``select_related``; None when it has no connection row)."""
    result = account(pk, auth_method=method)
    result._state.fields_cache["oauth"] = connection
    return result


@pytest.mark.parametrize("method", ["xoauth2", "oauthbearer"])
def test_oauth_accounts_without_a_working_connection_are_skipped_with_the_reason(method):
    never = oauth_account(1, method, None)
    refused = oauth_account(2, method, OAuthConnection(state=OAuthState.NEEDS_RECONNECT))
    connected = oauth_account(3, method, OAuthConnection(state=OAuthState.CONNECTED))
    choice = pick([never, refused, connected], uses_default_from=True, from_address=SITE_FROM)
    assert pks(choice.candidates) == [3]
    assert skipped(choice) == [("acct1", "OAuth not connected"), ("acct2", "OAuth needs reconnect")]


def test_an_account_that_does_not_log_in_with_oauth_ignores_a_leftover_connection():
    """A password account that once used OAuth keeps sending: the old connection row is
    about a login it no longer uses."""
    former = oauth_account(1, "plain", OAuthConnection(state=OAuthState.DISCONNECTED))
    choice = pick([former], uses_default_from=True, from_address=SITE_FROM)
    assert pks(choice.candidates) == [1]


def test_an_oauth_account_loaded_without_its_connection_is_not_judged_by_it():
    """Selection never queries: without the connection loaded alongside, the login
    itself reports a missing token."""
    loaded_alone = account(1, auth_method="xoauth2")
    choice = pick([loaded_alone], uses_default_from=True, from_address=SITE_FROM)
    assert pks(choice.candidates) == [1]


def test_only_an_account_hint_makes_a_message_name_an_account():
    """What the outbox and the log call "the account named by the message": nothing for
    mail routed by its From, its purpose or the defaults, however it is routed."""
    accounts = [account(1, allowed_senders="example.org"), account(2, purpose="billing")]
    assert pick(accounts, from_address=FROM).account is None
    assert pick(accounts, purpose="billing").account is None
    assert pick(accounts, uses_default_from=True, from_address=SITE_FROM).account is None
    assert pick(accounts, account_ref=2).account is accounts[1]


def test_a_users_account_that_may_not_send_the_from_shares_with_nobody():
    """The user's own accounts carry their mail; a first one that may not send the From
    shares with nobody, not even with an account of the user's that may."""
    accounts = [
        account(1, owner_id=7, priority=10),
        account(2, owner_id=7, priority=10, allowed_senders="example.org"),
    ]
    choice = pick(accounts, user_id=7, from_address=FROM)
    assert (choice.step, pks(choice.candidates)) == ("user", [1, 2])
    assert choice.pool == 1
