"""Choose the accounts for one message: pure functions, every rule in one place.

Input: the site's accounts (already loaded, with ``default_for_ids`` set), the hints,
facts about the message and the time. Output: the ordered candidates to try and why
other matching accounts were skipped. No database, no network, so the whole order of
precedence is tested quickly and exhaustively.

Order (the first step that matches any active account wins):

1. an explicit account: an ``SmtpAccount`` instance or an ``int`` is matched by primary
   key only, a string by name only (names are never all digits, so a hint can never
   mean two accounts); a personal account only for mail sent as its owner;
2. the sending user: their own accounts, then accounts they are the default for;
3. the purpose asked for (accounts allowed to send the From address first);
4. accounts allowed to send the message's From address;
5. the site default of the default purpose, then any shared account of that purpose
   (a hinted purpose's own site default already came first in step 3);
6. the fallback server.

Personal accounts (with an owner) are only ever used for mail sent as their owner
(the ``user`` hint), whatever the account hint says: a hint naming someone else's
personal account raises :exc:`AccountNotAllowed` rather than sending their mail.
Behind the primary accounts come failover candidates: other shared accounts allowed to
send the same From address (or, for mail using the site's default From, accounts of the
same purpose), so a transient failure never changes who the mail appears to come from.

The leading candidates that are equally eligible form a *pool* (:attr:`Choice.pool`):
chosen by the same step, of the same priority, purpose, kind (site default or not,
personal or shared) and, for mail with its own From, each allowed to send that From.
Which member sends which message is the engine's (the purpose's ``POOL_POLICY``); the
order here is unchanged, so ``fill_first`` is exactly the order above.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext as _

from .exceptions import AccountNotAllowed, UnknownAccount
from .hints import Hints

if TYPE_CHECKING:
    from .models import SmtpAccount


@dataclass
class Choice:
    #: Which rule decided: "account", "user", "purpose", "from", "default", "fallback".
    step: str
    #: Usable accounts, in the order to try them (primary first, then failover).
    candidates: list[SmtpAccount] = field(default_factory=list)
    #: Accounts that matched but may not send now, with the reason.
    skipped: list[tuple[SmtpAccount, str]] = field(default_factory=list)
    #: The account an explicit hint named (step "account"), usable now or not: the
    #: outbox stores its primary key, so a queued message keeps exactly this account.
    account: SmtpAccount | None = None
    #: How many leading candidates form a pool: equally eligible (chosen by the same
    #: step, same priority, same kind, each allowed to send the From), so the engine may
    #: share messages among them by the purpose's policy (see :func:`pool_size`).
    pool: int = 1

    @property
    def use_fallback(self) -> bool:
        return self.step == "fallback"


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def resolve_account(accounts: Iterable[SmtpAccount], ref: Any) -> SmtpAccount:
    """Find the account a hint names.

    An ``SmtpAccount`` instance or an ``int`` is a primary key and matches only the
    account with that key; a string is a name and matches only the account with that
    name. Never both: a name that looks like a primary key would otherwise let whoever
    chose the name receive the mail meant for that key (names of digits are refused by
    the model, and a string of digits here is refused with a hint to pass an ``int``).
    """
    from .models import SmtpAccount

    if isinstance(ref, SmtpAccount):
        if ref.pk is None:
            raise UnknownAccount(
                _("The account hint %(ref)r is an unsaved account: save it first.")
                % {"ref": str(ref)}
            )
        by_pk: Any = ref.pk
    elif isinstance(ref, int) and not isinstance(ref, bool):
        by_pk = ref
    elif isinstance(ref, str):
        if _is_digits(ref.strip()):
            raise UnknownAccount(
                _(
                    "The account hint %(ref)r is text made of digits. Account names are "
                    "never all digits; to name the account with id %(id)s, pass the number "
                    "%(id)s (an int), or the account itself."
                )
                % {"ref": ref, "id": ref.strip()}
            )
        for account in accounts:
            if account.name == ref:
                return account
        raise UnknownAccount(
            _("No SMTP account is named %(ref)r. Check the account hint (name or id).")
            % {"ref": ref}
        )
    else:
        raise UnknownAccount(
            _(
                "The account hint %(ref)r is neither an SmtpAccount, its id (an int) nor "
                "its name (a string)."
            )
            % {"ref": ref}
        )
    for account in accounts:
        if account.pk == by_pk:
            return account
    if isinstance(ref, SmtpAccount) and ref.name:
        raise UnknownAccount(
            _("The SMTP account %(name)r (id %(id)s) no longer exists.")
            % {"name": ref.name, "id": by_pk}
        )
    raise UnknownAccount(
        _("No SMTP account with id %(id)s exists. Check the account hint (name or id).")
        % {"id": by_pk}
    )


def check_personal(account: SmtpAccount, user_id: int | None) -> None:
    """Refuse a personal account for mail not sent as its owner (see the module
    docstring): the account hint alone never reaches someone's mailbox."""
    if account.owner_id is not None and account.owner_id != user_id:
        raise AccountNotAllowed(
            _(
                "The SMTP account %(name)r is personal: it only sends mail sent as its "
                "owner. Send the message as that user (the user hint), or name a shared "
                "account."
            )
            % {"name": account.name}
        )


def _sort_key(account: SmtpAccount) -> tuple[int, int]:
    return (account.priority, account.pk or 0)


def unusable_reason(account: SmtpAccount, now: dt.datetime, message_size: int) -> str | None:
    if not account.is_active:
        return _("inactive")
    if account.is_rate_limited(now):
        assert account.rate_limited_until is not None
        return _("rate limited until %(time)s") % {
            "time": account.rate_limited_until.isoformat(timespec="seconds")
        }
    # An OAuth account that is not connected (never, disconnected, or refused for good)
    # has no token to log in with: skipped like a paused account. Read only when the
    # engine select_related it (None: no OAuth row at all); selection never queries.
    cache = account._state.fields_cache
    if account.auth_method in ("xoauth2", "oauthbearer") and "oauth" in cache:
        oauth = cache["oauth"]
        if oauth is None or oauth.state != "connected":
            state = "not connected" if oauth is None else oauth.get_state_display()
            return _("OAuth %(state)s") % {"state": state}
    if account.max_message_size and message_size > account.max_message_size:
        return _("message of %(size)d bytes exceeds its maximum of %(max)d") % {
            "size": message_size,
            "max": account.max_message_size,
        }
    return None


def choose(
    accounts: Sequence[SmtpAccount],
    *,
    hints: Hints,
    user_id: int | None,
    from_address: str,
    uses_default_from: bool,
    message_size: int,
    now: dt.datetime,
    default_purpose: str,
) -> Choice:
    """Return the ordered candidates for one message (see the module docstring)."""
    active = [a for a in accounts if a.is_active]
    shared = sorted((a for a in active if a.owner_id is None), key=_sort_key)

    def matches_from(account: SmtpAccount) -> bool:
        return bool(from_address) and account.may_send(from_address)

    step, primary = _primary(
        accounts,
        active,
        shared,
        hints,
        user_id,
        from_address,
        uses_default_from,
        default_purpose,
        matches_from,
    )
    if step == "fallback":
        # Nothing matched: no pool to fail over to (and no primary account whose
        # purpose it would be drawn from).
        return Choice("fallback")

    if uses_default_from:
        pool = [a for a in shared if a.purpose == primary[0].purpose]
    else:
        pool = [a for a in shared if matches_from(a)]
    if user_id is not None:
        own = [a for a in active if a.owner_id == user_id]
        pool = own + pool
    chosen_ids = {a.pk for a in primary}
    ordered = primary + [a for a in pool if a.pk not in chosen_ids]

    choice = Choice(step, account=primary[0] if step == "account" else None)
    seen: set[Any] = set()
    for account in ordered:
        if account.pk in seen:
            continue
        seen.add(account.pk)
        reason = unusable_reason(account, now, message_size)
        if reason is None:
            choice.candidates.append(account)
        else:
            choice.skipped.append((account, reason))
    if step != "account":
        choice.pool = pool_size(
            choice.candidates, chosen_ids, None if uses_default_from else matches_from
        )
    return choice


def pool_key(account: SmtpAccount) -> tuple[Any, ...]:
    """The key of the pool ``account`` belongs to (see :func:`pools`): accounts that are
    equally eligible at one selection step share it."""
    return (account.priority, account.purpose, account.is_site_default, account.owner_id)


def pools(accounts: Iterable[SmtpAccount]) -> dict[tuple[Any, ...], list[SmtpAccount]]:
    """The active accounts the selection would pool, by pool key (same priority,
    purpose, site-default flag and owner): the groups of two or more, in selection
    order, for showing to a person. Whether a given message is shared among them also
    depends on its From, which each member must be allowed to send."""
    groups: dict[tuple[Any, ...], list[SmtpAccount]] = {}
    for account in sorted((a for a in accounts if a.is_active), key=_sort_key):
        groups.setdefault(pool_key(account), []).append(account)
    return {key: members for key, members in groups.items() if len(members) > 1}


def pool_size(
    candidates: Sequence[SmtpAccount], primary_ids: set[Any], matches_from: Any = None
) -> int:
    """How many leading ``candidates`` are equally eligible: primary (chosen by the
    step itself, not failover), with the first one's priority, purpose, site-default
    flag and owner and, when ``matches_from`` is given (mail with its own From), each
    allowed to send it. A first candidate that may not send the From (a purpose hint
    can pick one) shares with nobody: a pool never widens who may send a From."""
    if not candidates:
        return 0
    first = candidates[0]
    if first.pk not in primary_ids or (matches_from is not None and not matches_from(first)):
        return 1
    size = 1
    for account in candidates[1:]:
        if account.pk not in primary_ids or pool_key(account) != pool_key(first):
            break
        if matches_from is not None and not matches_from(account):
            break
        size += 1
    return size


def _primary(
    accounts: Sequence[SmtpAccount],
    active: list[SmtpAccount],
    shared: list[SmtpAccount],
    hints: Hints,
    user_id: int | None,
    from_address: str,
    uses_default_from: bool,
    default_purpose: str,
    matches_from: Any,
) -> tuple[str, list[SmtpAccount]]:
    if hints.account is not None:
        account = resolve_account(accounts, hints.account)
        check_personal(account, user_id)
        return "account", [account]

    if user_id is not None:
        own = sorted((a for a in active if a.owner_id == user_id), key=_sort_key)
        # Someone else's personal account never carries this user's mail, even if an
        # admin ticked the user in its "default for" list.
        default_for = sorted(
            (
                a
                for a in active
                if user_id in getattr(a, "default_for_ids", ()) and a.owner_id in (None, user_id)
            ),
            key=_sort_key,
        )
        if own or default_for:
            return "user", own + [a for a in default_for if a not in own]

    if hints.purpose is not None:
        of_purpose = [a for a in shared if a.purpose == hints.purpose]
        if of_purpose:
            of_purpose.sort(
                key=lambda a: (not matches_from(a), not a.is_site_default, *_sort_key(a))
            )
            return "purpose", of_purpose

    if not uses_default_from and from_address:
        by_from = [a for a in shared if matches_from(a)]
        if by_from:
            return "from", by_from

    # The site default of a hinted purpose was already tried first in the purpose step
    # (which sorts site defaults first), so only the default purpose is left here.
    defaults = [a for a in shared if a.is_site_default and a.purpose == default_purpose]
    if not defaults:
        defaults = [a for a in shared if a.purpose == default_purpose]
    if defaults:
        return "default", defaults
    return "fallback", []
