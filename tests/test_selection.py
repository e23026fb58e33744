"""The order of precedence of account selection, and where hints come from.

``selection.choose()`` is pure: the accounts here are unsaved model instances (primary
key, owner id and ``default_for_ids`` set by hand), so no database is involved.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_multismtp.exceptions import AccountNotAllowed, UnknownAccount
from django_multismtp.hints import Hints, context_hints, message_hints, sending_as
from django_multismtp.models import SmtpAccount
from django_multismtp.selection import Choice, choose

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
SITE_FROM = "webmaster@site.test"
FROM = "someone@example.org"


def account(pk: int, **fields: Any) -> SmtpAccount:
    """An unsaved account; ``default_for_ids`` as the backend's loader sets it."""
    default_for = fields.pop("default_for_ids", ())
    values: dict[str, Any] = {
        "name": f"acct{pk}",
        "purpose": "system",
        "from_email": f"acct{pk}@accounts.test",
        "host": "127.0.0.1",
        "port": 25,
        "security": "none",
        "auth_method": "none",
    }
    values.update(fields)
    result = SmtpAccount(pk=pk, **values)
    result.default_for_ids = set(default_for)  # type: ignore[attr-defined]
    return result


def pick(
    accounts: list[SmtpAccount],
    *,
    account_ref: Any = None,
    purpose: str | None = None,
    user_id: int | None = None,
    from_address: str = FROM,
    uses_default_from: bool = False,
    size: int = 1000,
    now: dt.datetime = NOW,
    default_purpose: str = "system",
) -> Choice:
    return choose(
        accounts,
        hints=Hints(account=account_ref, purpose=purpose),
        user_id=user_id,
        from_address=from_address,
        uses_default_from=uses_default_from,
        message_size=size,
        now=now,
        default_purpose=default_purpose,
    )


def names(choice: Choice) -> list[str]:
    return [a.name for a in choice.candidates]


def skipped(choice: Choice) -> list[tuple[str, str]]:
    return [(a.name, reason) for a, reason in choice.skipped]


# -- 1. explicit account -------------------------------------------------------------------


@pytest.fixture
def crowd() -> list[SmtpAccount]:
    """Accounts every other step would pick: site default, user's own, purpose, From."""
    return [
        account(1, is_site_default=True, priority=1),
        account(2, name="special", purpose="campaigns", priority=500),
        account(3, owner_id=7),
        account(4, purpose="billing", allowed_senders="example.org"),
    ]


@pytest.mark.parametrize("ref", ["instance", 2, "special"], ids=["instance", "pk", "name"])
def test_explicit_account_wins_over_every_other_step(crowd, ref):
    if ref == "instance":
        ref = crowd[1]
    choice = pick(crowd, account_ref=ref, user_id=7, purpose="billing")
    assert choice.step == "account"
    assert choice.candidates[0].name == "special"
    assert not choice.use_fallback


def test_explicit_account_instance_is_matched_by_primary_key(crowd):
    # A separately loaded copy of the same row (as a caller would hold) is the same account.
    copy = account(2, name="renamed-since")
    choice = pick(crowd, account_ref=copy)
    assert choice.candidates[0] is crowd[1]


@pytest.mark.parametrize("ref", ["no-such-account", 99])
def test_unknown_explicit_account_raises_a_clear_error(crowd, ref):
    with pytest.raises(UnknownAccount) as excinfo:
        pick(crowd, account_ref=ref)
    assert str(ref) in str(excinfo.value)
    assert "name or id" in str(excinfo.value)


def test_a_primary_key_hint_never_picks_the_account_named_like_that_key():
    # Account 5 carries the name "2" (a name the model refuses now; here, unsaved, it
    # stands for a row from before that rule): the hint 2 still means primary key 2.
    named_two = account(5, name="2", priority=0)
    two = account(2, name="two", priority=900)
    for accounts in ([named_two, two], [two, named_two]):
        assert names(pick(accounts, account_ref=2)) == ["two"]
        assert names(pick(accounts, account_ref=account(2, name="2"))) == ["two"]


def test_a_name_hint_never_picks_the_account_with_that_primary_key():
    accounts = [account(1, name="shared"), account(2, name="1-rename")]
    with pytest.raises(UnknownAccount, match="No SMTP account is named '1-'"):
        pick(accounts, account_ref="1-")
    assert names(pick(accounts, account_ref="1-rename")) == ["1-rename"]


@pytest.mark.parametrize("ref", ["1", " 2 ", "0002"])
def test_an_account_hint_of_digits_in_text_is_refused_with_the_fix(crowd, ref):
    # Text of digits used to mean "a name, or else a primary key": whoever chose that
    # name took the mail. Now it is neither, and the error says to pass an int.
    crowd.append(account(9, name=ref))
    with pytest.raises(UnknownAccount, match=r"text made of digits.*pass the number"):
        pick(crowd, account_ref=ref)


@pytest.mark.parametrize("ref", [True, 2.0, object()], ids=["bool", "float", "object"])
def test_an_account_hint_of_another_type_is_refused(crowd, ref):
    with pytest.raises(UnknownAccount, match="neither an SmtpAccount"):
        pick(crowd, account_ref=ref)


def test_an_instance_of_another_model_is_not_read_as_an_account_key(crowd):
    from django.contrib.auth.models import User

    with pytest.raises(UnknownAccount, match="neither an SmtpAccount"):
        pick(crowd, account_ref=User(pk=2, username="special"))


def test_an_unsaved_account_is_refused(crowd):
    with pytest.raises(UnknownAccount, match="unsaved"):
        pick(crowd, account_ref=SmtpAccount(name="special"))


def test_explicit_inactive_account_is_reported_not_silently_replaced(crowd):
    crowd[1].is_active = False
    choice = pick(crowd, account_ref="special")
    assert choice.step == "account"
    assert "special" not in names(choice)
    assert skipped(choice) == [("special", "inactive")]


# -- 2. the sending user -------------------------------------------------------------------


def test_users_own_accounts_come_before_accounts_they_are_default_for():
    accounts = [
        account(1, default_for_ids={7}, priority=1),
        account(5, owner_id=7, priority=50),
        account(6, owner_id=7, priority=10),
        account(8, is_site_default=True),
    ]
    choice = pick(accounts, user_id=7)
    assert choice.step == "user"
    assert names(choice) == ["acct6", "acct5", "acct1"]


def test_default_for_accounts_serve_a_user_without_own_accounts():
    accounts = [account(1, is_site_default=True), account(2, default_for_ids={7, 9})]
    assert names(pick(accounts, user_id=9)) == ["acct2"]
    assert pick(accounts, user_id=9).step == "user"
    # Someone else is not in default_for: the site default serves them.
    assert pick(accounts, user_id=8).step == "default"
    assert names(pick(accounts, user_id=8)) == ["acct1"]


def test_user_beats_purpose():
    accounts = [account(1, purpose="billing"), account(2, owner_id=7)]
    choice = pick(accounts, user_id=7, purpose="billing")
    assert choice.step == "user"
    assert names(choice)[0] == "acct2"
    assert "acct1" not in names(choice)


def test_user_without_accounts_falls_through_to_purpose():
    accounts = [account(1, purpose="billing"), account(2, owner_id=7)]
    choice = pick(accounts, user_id=8, purpose="billing")
    assert choice.step == "purpose"
    assert names(choice) == ["acct1"]


# -- 3. purpose ----------------------------------------------------------------------------


def test_purpose_beats_from_match():
    accounts = [
        account(1, purpose="system", allowed_senders="example.org", priority=1),
        account(2, purpose="billing", priority=900),
    ]
    choice = pick(accounts, purpose="billing")
    assert choice.step == "purpose"
    # The From-matching account may still carry the message if billing fails.
    assert names(choice) == ["acct2", "acct1"]


def test_within_a_purpose_from_matches_first_then_site_default_then_priority():
    accounts = [
        account(1, purpose="billing", priority=1),
        account(2, purpose="billing", priority=50, is_site_default=True),
        account(3, purpose="billing", priority=300, allowed_senders="example.org"),
        account(4, purpose="billing", priority=200, allowed_senders=FROM),
        account(5, purpose="system", priority=0, is_site_default=True),
    ]
    choice = pick(accounts, purpose="billing")
    assert choice.step == "purpose"
    assert names(choice) == ["acct4", "acct3", "acct2", "acct1"]


def test_purpose_without_active_accounts_falls_through():
    accounts = [account(1, purpose="billing", is_active=False), account(2, is_site_default=True)]
    choice = pick(accounts, purpose="billing")
    assert choice.step == "default"
    assert names(choice) == ["acct2"]


# -- 4. From address -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "allowed",
    [FROM, "Someone@Example.ORG", "example.org", "@example.org", "other.test\nexample.org"],
)
def test_from_address_match(allowed):
    accounts = [account(1, is_site_default=True, priority=1), account(2, allowed_senders=allowed)]
    choice = pick(accounts)
    assert choice.step == "from"
    assert names(choice) == ["acct2"]


def test_from_address_match_by_the_accounts_own_from_email():
    accounts = [account(1, is_site_default=True), account(2, from_email="Someone@example.org")]
    assert pick(accounts).step == "from"
    assert names(pick(accounts)) == ["acct2"]


@pytest.mark.parametrize("allowed", ["mail.example.org", "@sub.example.org", "other@example.org"])
def test_near_misses_do_not_match_the_from_address(allowed):
    accounts = [account(1, is_site_default=True), account(2, allowed_senders=allowed)]
    choice = pick(accounts)
    assert choice.step == "default"
    assert names(choice) == ["acct1"]


def test_a_domain_entry_does_not_cover_subdomains():
    accounts = [account(1, is_site_default=True), account(2, allowed_senders="example.org")]
    choice = pick(accounts, from_address="x@mail.example.org")
    assert choice.step == "default"


def test_mail_using_the_site_default_from_skips_the_from_step():
    accounts = [
        account(1, allowed_senders="site.test", priority=1),
        account(2, is_site_default=True, priority=100),
        account(3, purpose="campaigns", allowed_senders="site.test"),
    ]
    as_default = pick(accounts, from_address=SITE_FROM, uses_default_from=True)
    assert as_default.step == "default"
    # Failover: accounts of the same purpose, whatever they may send as.
    assert names(as_default) == ["acct2", "acct1"]

    explicit = pick(accounts, from_address=SITE_FROM, uses_default_from=False)
    assert explicit.step == "from"
    assert names(explicit) == ["acct1", "acct3"]


# -- 5. site defaults and the fallback -----------------------------------------------------


def test_site_default_of_the_purpose():
    accounts = [account(1, priority=1), account(2, is_site_default=True, priority=100)]
    choice = pick(accounts)
    assert choice.step == "default"
    # Not using the default From, and no one else may send FROM: no failover.
    assert names(choice) == ["acct2"]
    assert names(pick(accounts, uses_default_from=True, from_address=SITE_FROM)) == [
        "acct2",
        "acct1",
    ]


def test_site_default_follows_the_default_purpose_setting():
    accounts = [
        account(1, is_site_default=True, purpose="system"),
        account(2, is_site_default=True, purpose="billing"),
    ]
    assert names(pick(accounts, default_purpose="billing")) == ["acct2"]
    assert names(pick(accounts, default_purpose="system")) == ["acct1"]


def test_purpose_without_accounts_uses_the_site_default_of_the_default_purpose():
    accounts = [
        account(1, purpose="system", priority=1),
        account(2, purpose="system", is_site_default=True, priority=100),
        account(3, purpose="campaigns", is_site_default=True, is_active=False),
    ]
    choice = pick(accounts, purpose="campaigns")
    assert choice.step == "default"
    assert names(choice) == ["acct2"]


def test_without_site_default_any_shared_account_of_the_default_purpose():
    accounts = [
        account(1, purpose="campaigns", is_site_default=True, priority=0),
        account(3, priority=20),
        account(2, priority=10),
        account(4, owner_id=7, priority=0),
    ]
    choice = pick(accounts)
    assert choice.step == "default"
    assert names(choice) == ["acct2", "acct3"]


def test_fallback_when_nothing_matches():
    accounts = [
        account(1, purpose="campaigns", is_site_default=True),
        account(2, owner_id=7),
        account(3, is_active=False, is_site_default=True),
    ]
    choice = pick(accounts)
    assert choice.step == "fallback"
    assert choice.use_fallback
    assert choice.candidates == [] and choice.skipped == []
    assert pick([]).use_fallback


def test_mail_from_the_default_from_with_only_another_purposes_account_uses_the_fallback():
    # Nothing matches, so there is no primary account whose purpose would pick the
    # failover pool: choose() returns the fallback before building one.
    campaigns = account(1, purpose="campaigns", is_site_default=True)
    choice = pick([campaigns], from_address=SITE_FROM, uses_default_from=True)
    assert choice.step == "fallback"
    assert choice.candidates == [] and choice.skipped == [] and choice.account is None


# -- personal accounts ---------------------------------------------------------------------


@pytest.mark.parametrize("user_id", [None, 8])
def test_personal_accounts_never_carry_other_peoples_or_unowned_mail(user_id):
    personal = account(1, owner_id=7, allowed_senders="example.org", priority=0)
    assert pick([personal], user_id=user_id).use_fallback
    assert pick([personal], user_id=user_id, purpose="system").use_fallback

    shared = account(2, allowed_senders="example.org", priority=100)
    choice = pick([personal, shared], user_id=user_id)
    assert choice.step == "from"
    assert names(choice) == ["acct2"]
    explicit = pick([personal, shared], user_id=user_id, account_ref="acct2")
    assert names(explicit) == ["acct2"]


@pytest.mark.parametrize("user_id", [None, 8])
@pytest.mark.parametrize("by", ["instance", "pk", "name"])
def test_an_account_hint_never_sends_mail_through_someone_elses_personal_account(user_id, by):
    personal = account(1, name="olga", owner_id=7, priority=0)
    shared = account(2, is_site_default=True)
    ref = {"instance": personal, "pk": 1, "name": "olga"}[by]
    with pytest.raises(AccountNotAllowed, match="'olga' is personal"):
        pick([personal, shared], account_ref=ref, user_id=user_id)
    # Refused, not quietly sent through another account: AccountNotAllowed is an
    # UnknownAccount, which the worker reports and the direct send raises.
    assert issubclass(AccountNotAllowed, UnknownAccount)


def test_an_account_hint_may_name_a_personal_account_for_its_owners_mail():
    personal = account(1, name="olga", owner_id=7, priority=500)
    mine = account(3, name="olga-2", owner_id=7, priority=1)
    shared = account(2, is_site_default=True, allowed_senders="example.org")
    choice = pick([personal, mine, shared], account_ref=1, user_id=7)
    assert choice.step == "account"
    assert choice.account is personal
    assert names(choice) == ["olga", "olga-2", "acct2"]


def test_personal_account_carries_its_owners_mail():
    personal = account(1, owner_id=7, priority=500)
    shared = account(2, allowed_senders="example.org", priority=1)
    choice = pick([personal, shared], user_id=7)
    assert choice.step == "user"
    assert names(choice) == ["acct1", "acct2"]


def test_someone_elses_personal_account_is_not_used_through_default_for():
    # An admin ticked user 8 in "default for" on user 7's personal account.
    personal = account(1, owner_id=7, default_for_ids={8})
    site = account(2, is_site_default=True)
    choice = pick([personal, site], user_id=8)
    assert "acct1" not in names(choice)
    assert choice.step == "default"
    assert names(choice) == ["acct2"]
    # Its owner still gets it.
    assert names(pick([personal, site], user_id=7))[0] == "acct1"


# -- accounts that may not send now --------------------------------------------------------


def test_rate_limited_account_is_skipped_with_its_end_time():
    limited = account(1, allowed_senders="example.org", priority=1)
    limited.rate_limited_until = NOW + dt.timedelta(minutes=5)
    other = account(2, allowed_senders="example.org", priority=2)
    choice = pick([limited, other])
    assert choice.step == "from"
    assert names(choice) == ["acct2"]
    assert skipped(choice) == [("acct1", "rate limited until 2025-06-01T12:05:00+00:00")]


@pytest.mark.parametrize("until", [NOW, NOW - dt.timedelta(seconds=1)])
def test_rate_limit_in_the_past_no_longer_applies(until):
    limited = account(1, allowed_senders="example.org", priority=1, rate_limited_until=until)
    other = account(2, allowed_senders="example.org", priority=2)
    choice = pick([limited, other])
    assert names(choice) == ["acct1", "acct2"]
    assert choice.skipped == []


def test_rate_limit_is_judged_at_the_given_time():
    limited = account(1, rate_limited_until=NOW + dt.timedelta(minutes=5), is_site_default=True)
    assert pick([limited]).candidates == []
    later = NOW + dt.timedelta(minutes=6)
    assert names(pick([limited], now=later)) == ["acct1"]


def test_message_larger_than_the_accounts_maximum_is_skipped():
    small = account(1, allowed_senders="example.org", priority=1, max_message_size=999)
    exact = account(2, allowed_senders="example.org", priority=2, max_message_size=1000)
    unlimited = account(3, allowed_senders="example.org", priority=3)
    choice = pick([small, exact, unlimited], size=1000)
    assert names(choice) == ["acct2", "acct3"]
    assert skipped(choice) == [("acct1", "message of 1000 bytes exceeds its maximum of 999")]


def test_inactive_accounts_do_not_win_a_step():
    accounts = [
        account(1, allowed_senders="example.org", is_active=False),
        account(2, is_site_default=True),
    ]
    choice = pick(accounts)
    assert choice.step == "default"
    assert names(choice) == ["acct2"]


def test_when_every_matching_account_is_unusable_the_from_is_not_changed():
    limited = account(1, allowed_senders="example.org")
    limited.rate_limited_until = NOW + dt.timedelta(hours=1)
    site = account(2, is_site_default=True)
    choice = pick([limited, site])
    assert choice.step == "from"
    assert choice.candidates == []
    assert [name for name, _ in skipped(choice)] == ["acct1"]
    assert not choice.use_fallback


# -- failover candidates -------------------------------------------------------------------


def test_failover_only_to_accounts_allowed_to_send_the_same_from():
    accounts = [
        account(1, purpose="billing", priority=1),
        account(2, purpose="system", allowed_senders="example.org", priority=5),
        account(3, purpose="system", priority=2, is_site_default=True),
        account(4, purpose="campaigns", allowed_senders=FROM, priority=9),
        account(5, purpose="billing", priority=7, owner_id=8, allowed_senders="example.org"),
    ]
    choice = pick(accounts, purpose="billing")
    assert choice.step == "purpose"
    assert names(choice) == ["acct1", "acct2", "acct4"]


def test_failover_for_the_site_default_from_stays_within_the_purpose():
    accounts = [
        account(1, purpose="campaigns", priority=1),
        account(2, purpose="campaigns", priority=2),
        account(3, purpose="system", is_site_default=True),
        account(4, purpose="system", priority=0),
    ]
    choice = pick(accounts, account_ref="acct2", from_address=SITE_FROM, uses_default_from=True)
    assert choice.step == "account"
    assert names(choice) == ["acct2", "acct1"]

    default = pick(accounts, from_address=SITE_FROM, uses_default_from=True)
    assert names(default) == ["acct3", "acct4"]


def test_explicit_account_fails_over_to_accounts_allowed_to_send_the_from():
    accounts = [
        account(1, name="chosen"),
        account(2, allowed_senders="example.org", priority=3),
        account(3, is_site_default=True, priority=1),
    ]
    assert names(pick(accounts, account_ref="chosen")) == ["chosen", "acct2"]


def test_priority_order_with_stable_primary_key_tiebreak():
    accounts = [
        account(4, allowed_senders="example.org", priority=10),
        account(2, allowed_senders="example.org", priority=10),
        account(3, allowed_senders="example.org", priority=5),
        account(1, allowed_senders="example.org", priority=10),
    ]
    expected = ["acct3", "acct1", "acct2", "acct4"]
    assert names(pick(accounts)) == expected
    assert names(pick(list(reversed(accounts)))) == expected


def test_no_account_is_listed_twice():
    accounts = [
        account(1, owner_id=7, allowed_senders="example.org"),
        account(2, default_for_ids={7}, allowed_senders="example.org"),
        account(3, allowed_senders="example.org"),
    ]
    choice = pick(accounts, user_id=7, account_ref="acct2")
    assert names(choice) == ["acct2", "acct1", "acct3"]


# -- hints ---------------------------------------------------------------------------------


def test_hints_over_fills_only_what_is_unset():
    mine = Hints(account="a", purpose=None)
    theirs = Hints(account="b", user=5, purpose="billing")
    assert mine.over(theirs) == Hints(account="a", user=5, purpose="billing")
    assert theirs.over(mine) == theirs
    # Falsy but set values still win: pk 0 is not "unset".
    assert Hints(account=0).over(Hints(account="b")).account == 0


def test_hints_is_empty():
    assert Hints().is_empty()
    assert not Hints(purpose="billing").is_empty()


def test_sending_as_nests_and_restores():
    assert context_hints().is_empty()
    with sending_as(user=5, purpose="billing") as outer:
        assert outer == Hints(user=5, purpose="billing")
        with sending_as(purpose="campaigns") as inner:
            assert inner == Hints(user=5, purpose="campaigns")
            assert context_hints() == inner
            with sending_as(account="special"):
                assert context_hints() == Hints(account="special", user=5, purpose="campaigns")
        assert context_hints() == Hints(user=5, purpose="billing")
    assert context_hints().is_empty()


def test_sending_as_is_restored_after_an_exception():
    with pytest.raises(RuntimeError), sending_as(user=5):
        raise RuntimeError("boom")
    assert context_hints().is_empty()


def test_sending_as_does_not_leak_into_other_threads():
    seen: list[Hints] = []
    with sending_as(user=5):
        thread = threading.Thread(target=lambda: seen.append(context_hints()))
        thread.start()
        thread.join()
    assert seen == [Hints()]


def test_message_hints_from_attributes():
    message = EmailMessage("s", "b", "from@example.org", ["to@example.org"])
    message.smtp_account = 3  # type: ignore[attr-defined]
    message.smtp_user = "alice"  # type: ignore[attr-defined]
    message.smtp_purpose = "billing"  # type: ignore[attr-defined]
    assert message_hints(message) == Hints(account=3, user="alice", purpose="billing")


def test_message_hints_from_headers_any_case():
    message = EmailMessage(
        "s",
        "b",
        "from@example.org",
        ["to@example.org"],
        headers={
            "X-MultiSMTP-Account": "special",
            "x-multismtp-user": 12,
            "X-MULTISMTP-PURPOSE": "billing",
            "X-Other": "ignored",
        },
    )
    assert message_hints(message) == Hints(account="special", user="12", purpose="billing")


@pytest.mark.parametrize(("header", "hint"), [("1", 1), (" 12 ", 12), ("1a", "1a"), ("x", "x")])
def test_the_account_header_is_a_primary_key_when_it_is_digits(header, hint):
    # A header is text; digits mean a primary key (no account name is all digits).
    message = EmailMessage(headers={"X-MultiSMTP-Account": header})
    assert message_hints(message) == Hints(account=hint)


def test_an_account_header_of_very_many_digits_stays_text_and_is_refused(crowd):
    digits = "9" * 5000  # int() of that raises ValueError: never from message_hints()
    hints = message_hints(EmailMessage(headers={"X-MultiSMTP-Account": digits}))
    assert hints.account == digits
    with pytest.raises(UnknownAccount, match="text made of digits"):
        pick(crowd, account_ref=hints.account)


def test_a_header_naming_a_key_reaches_that_account_whatever_another_is_named():
    shared = account(1, name="shared", priority=100)
    renamed = account(9, name="1", owner_id=7, priority=0)  # the attack: a name "1"
    hints = message_hints(EmailMessage(headers={"X-MultiSMTP-Account": "1"}))
    for user_id in (None, 7):
        choice = pick([renamed, shared], account_ref=hints.account, user_id=user_id)
        assert choice.account is shared
        assert names(choice)[0] == "shared"


def test_message_attributes_win_over_headers_and_empty_headers_are_ignored():
    message = EmailMessage(
        "s",
        "b",
        "from@example.org",
        ["to@example.org"],
        headers={"X-MultiSMTP-Account": "from-header", "X-MultiSMTP-Purpose": ""},
    )
    message.smtp_account = "from-attribute"  # type: ignore[attr-defined]
    assert message_hints(message) == Hints(account="from-attribute")


def test_message_without_hints():
    message = EmailMessage("s", "b", "from@example.org", ["to@example.org"])
    assert message_hints(message).is_empty()
