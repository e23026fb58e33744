"""django_multismtp.verification on its own: codes, hashes, sending and confirming.

Codes travel through real SMTP servers on 127.0.0.1; time moves with the ``clock`` fixture.
"""

from __future__ import annotations

import datetime as dt
import re
import string

import pytest
from django.core.cache import cache
from django.test import override_settings

from django_multismtp import verification
from django_multismtp.models import DeliveryLog, SmtpAccount, VerificationCode
from django_multismtp.verification import Confirmation
from tests.factories import SmtpAccountFactory, UserFactory
from tests.smtp_servers import Fault

pytestmark = pytest.mark.django_db

CODE_RE = re.compile(r"Confirmation code: ([A-Z0-9]{8})")


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def account(smtp_server) -> SmtpAccount:
    return SmtpAccountFactory.for_server(smtp_server, name="Verify me")


def code_in(server, index: int = 0) -> str:
    message = server.wait_for(index + 1)[index].message()
    match = CODE_RE.search(str(message["Subject"]))
    assert match, message["Subject"]
    return match.group(1)


def other_code(code: str) -> str:
    return "ABCDEFGH" if code != "ABCDEFGH" else "HGFEDCBA"


# -- codes and hashes ------------------------------------------------------------------


class TestCodes:
    def test_alphabet_has_no_look_alikes(self):
        assert len(set(verification.ALPHABET)) == len(verification.ALPHABET) == 32
        assert set(verification.ALPHABET) <= set(string.ascii_uppercase + string.digits)
        # 0/O and 1/I are out. (The module's comment says "1/I/L", yet L is in the
        # alphabet: an upper-case L is hard to misread, and 32 symbols give 40 bits.)
        assert not set("0O1I") & set(verification.ALPHABET)

    def test_length_and_characters(self):
        codes = [verification.new_code() for _ in range(300)]
        for code in codes:
            assert len(code) == verification.CODE_LENGTH == 8
            assert set(code) <= set(verification.ALPHABET)
        assert len(set(codes)) == len(codes)
        # Every symbol of the alphabet turns up (2400 draws from 32): no truncated alphabet.
        assert set("".join(codes)) == set(verification.ALPHABET)

    @pytest.mark.parametrize(
        ("typed", "expected"),
        [
            ("k7px2m9q", "K7PX2M9Q"),
            ("  K7PX 2M9Q \n", "K7PX2M9Q"),
            ("k7px-2m9q", "K7PX2M9Q"),
            ("K7PX\t2M9Q.", "K7PX2M9Q"),
            ("", ""),
            ("x" * 500, "X" * 64),
        ],
    )
    def test_normalise(self, typed, expected):
        assert verification.normalise(typed) == expected

    def test_hash(self):
        code = "K7PX2M9Q"
        digest = verification.hash_code(7, code)
        assert re.fullmatch(r"[0-9a-f]{64}", digest)
        assert code not in digest.upper()
        assert code.lower() not in digest
        # Case and spacing as a person types them do not matter ...
        assert verification.hash_code(7, " k7px 2m9q ") == digest
        # ... but the account and the code do.
        assert verification.hash_code(8, code) != digest
        assert verification.hash_code(7, "K7PX2M9R") != digest

    def test_hash_is_keyed_with_the_secret_key(self):
        digest = verification.hash_code(7, "K7PX2M9Q")
        with override_settings(SECRET_KEY="another-secret-key-for-this-test-only"):
            assert verification.hash_code(7, "K7PX2M9Q") != digest

    def test_messages(self):
        for result in Confirmation:
            assert result.message
        assert Confirmation.VERIFIED.message == "The code is right: the account is verified."


# -- sending ---------------------------------------------------------------------------


class TestSendCode:
    def test_sends_and_stores_only_a_hash(self, account, smtp_server, clock):
        user = UserFactory()
        sent = verification.send_code(account, "me@example.test", user=user)
        assert sent.result.ok
        assert sent.result.outcome == "sent"
        [received] = smtp_server.wait_for(1)
        assert received.rcpt_tos == ["me@example.test"]
        assert received.mail_from == account.from_email
        message = received.message()
        code = code_in(smtp_server)
        body = message.get_content()
        assert code in body
        assert "Verify me" in body
        assert "30 minutes" in body

        record = VerificationCode.objects.get()
        assert record == sent.code
        assert record.account == account
        assert record.sent_to == "me@example.test"
        assert record.created_by == user
        assert record.created_at == clock()
        assert record.expires_at == clock() + dt.timedelta(minutes=30)
        assert record.attempts == 0
        assert record.used_at is None
        assert record.code_hash == verification.hash_code(account.pk, code)
        # The code itself is nowhere in the database.
        for row in [*VerificationCode.objects.values(), *DeliveryLog.objects.values()]:
            for value in row.values():
                assert code not in str(value)
        log = DeliveryLog.objects.get()
        assert log.outcome == "sent"
        assert log.recipient_domains == "example.test"

    def test_anonymous_user_is_not_recorded(self, account, smtp_server):
        from django.contrib.auth.models import AnonymousUser

        sent = verification.send_code(account, "me@example.test", user=AnonymousUser())
        assert sent.result.ok
        assert VerificationCode.objects.get().created_by is None

    def test_ttl_setting(self, account, smtp_server, clock, settings):
        settings.MULTISMTP = {"VERIFICATION_CODE_TTL": dt.timedelta(minutes=5)}
        verification.send_code(account, "me@example.test")
        assert VerificationCode.objects.get().expires_at == clock() + dt.timedelta(minutes=5)
        assert "5 minutes" in smtp_server.wait_for(1)[0].message().get_content()
        clock.advance(minutes=5, seconds=1)
        assert verification.confirm_code(account, code_in(smtp_server)) == Confirmation.EXPIRED

    def test_refused_at_data(self, account, smtp_server):
        smtp_server.add_fault(Fault.reply(550, "5.7.1 Message rejected as spam", stage="DATA"))
        sent = verification.send_code(account, "me@example.test")
        assert not sent.result.ok
        assert sent.code is None
        assert sent.result.outcome == "permanent"
        assert sent.result.code == 550
        assert "Message rejected as spam" in sent.result.reply
        assert not VerificationCode.objects.exists()
        assert smtp_server.received == []
        account.refresh_from_db()
        assert account.last_error_code == 550
        assert DeliveryLog.objects.get().outcome == "permanent"

    def test_refused_recipient(self, account, smtp_server):
        smtp_server.add_fault(Fault.reply(550, "5.1.1 No such user", stage="RCPT"))
        sent = verification.send_code(account, "ghost@example.test")
        assert not sent.result.ok
        assert sent.code is None
        assert not VerificationCode.objects.exists()

    def test_failed_send_keeps_the_earlier_code(self, account, smtp_server):
        verification.send_code(account, "me@example.test")
        code = code_in(smtp_server)
        smtp_server.add_fault(Fault.reply(550, "5.7.1 Rejected", stage="DATA"))
        assert not verification.send_code(account, "me@example.test").result.ok
        assert verification.confirm_code(account, code) == Confirmation.VERIFIED

    def test_unreachable_server(self, smtp_server):
        account = SmtpAccountFactory.for_server(smtp_server)
        smtp_server.stop()
        sent = verification.send_code(account, "me@example.test")
        assert not sent.result.ok
        assert sent.result.outcome == "connection_failed"
        assert sent.result.hint
        assert not VerificationCode.objects.exists()

    def test_new_code_invalidates_earlier_ones(self, account, smtp_server, clock):
        first = verification.send_code(account, "me@example.test").code
        clock.advance(seconds=1)
        second = verification.send_code(account, "me@example.test").code
        assert first is not None and second is not None
        first.refresh_from_db()
        assert first.used_at == clock()
        second.refresh_from_db()
        assert second.used_at is None
        old, new = code_in(smtp_server, 0), code_in(smtp_server, 1)
        assert verification.confirm_code(account, old) == Confirmation.WRONG
        assert verification.confirm_code(account, new) == Confirmation.VERIFIED

    def test_codes_of_other_accounts_are_untouched(self, account, smtp_server, second_server):
        other = SmtpAccountFactory.for_server(second_server)
        verification.send_code(other, "me@example.test")
        verification.send_code(account, "me@example.test")
        assert verification.confirm_code(other, code_in(second_server)) == Confirmation.VERIFIED


# -- confirming ------------------------------------------------------------------------


class TestConfirmCode:
    def test_no_code(self, account):
        assert verification.confirm_code(account, "ABCDEFGH") == Confirmation.NO_CODE

    def test_right_code(self, account, smtp_server, clock):
        user = UserFactory()
        verification.send_code(account, "me@example.test")
        code = code_in(smtp_server)
        clock.advance(minutes=3)
        assert verification.confirm_code(account, code, user=user) == Confirmation.VERIFIED
        assert account.verified_at == clock()
        assert account.verified_by == user
        account.refresh_from_db()
        assert account.verified_at == clock()
        assert account.verified_by == user
        record = VerificationCode.objects.get()
        assert record.used_at == clock()
        assert record.attempts == 1
        # A used code is spent.
        assert verification.confirm_code(account, code) == Confirmation.NO_CODE

    def test_typed_loosely(self, account, smtp_server):
        verification.send_code(account, "me@example.test")
        code = code_in(smtp_server)
        typed = f"  {code[:4].lower()} - {code[4:].lower()} "
        assert verification.confirm_code(account, typed) == Confirmation.VERIFIED

    def test_anonymous_confirmation(self, account, smtp_server):
        verification.send_code(account, "me@example.test")
        assert verification.confirm_code(account, code_in(smtp_server)) == Confirmation.VERIFIED
        account.refresh_from_db()
        assert account.verified_at is not None
        assert account.verified_by is None

    def test_wrong_code_counts_an_attempt(self, account, smtp_server):
        verification.send_code(account, "me@example.test")
        code = code_in(smtp_server)
        assert verification.confirm_code(account, other_code(code)) == Confirmation.WRONG
        assert verification.confirm_code(account, "") == Confirmation.WRONG
        assert VerificationCode.objects.get().attempts == 2
        account.refresh_from_db()
        assert account.verified_at is None
        assert verification.confirm_code(account, code) == Confirmation.VERIFIED

    def test_code_of_another_account(self, account, smtp_server, second_server):
        other = SmtpAccountFactory.for_server(second_server)
        verification.send_code(other, "me@example.test")
        verification.send_code(account, "me@example.test")
        theirs, mine = code_in(second_server), code_in(smtp_server)
        assert theirs != mine  # 1 in 32**8 to collide
        assert verification.confirm_code(account, theirs) == Confirmation.WRONG
        assert verification.confirm_code(other, theirs) == Confirmation.VERIFIED

    def test_expiry_boundary(self, account, smtp_server, clock):
        verification.send_code(account, "me@example.test")
        code = code_in(smtp_server)
        clock.advance(minutes=30)
        assert verification.confirm_code(account, code) == Confirmation.EXPIRED
        # Expired is not an attempt, and stays expired.
        assert VerificationCode.objects.get().attempts == 0
        account.refresh_from_db()
        assert account.verified_at is None

    def test_just_before_expiry(self, account, smtp_server, clock):
        verification.send_code(account, "me@example.test")
        code = code_in(smtp_server)
        clock.advance(minutes=29, seconds=59)
        assert verification.confirm_code(account, code) == Confirmation.VERIFIED

    def test_too_many_attempts(self, account, smtp_server):
        verification.send_code(account, "me@example.test")
        code = code_in(smtp_server)
        for _ in range(5):
            assert verification.confirm_code(account, other_code(code)) == Confirmation.WRONG
        assert verification.confirm_code(account, code) == Confirmation.TOO_MANY_ATTEMPTS
        assert verification.confirm_code(account, code) == Confirmation.TOO_MANY_ATTEMPTS
        assert VerificationCode.objects.get().attempts == 5
        account.refresh_from_db()
        assert account.verified_at is None
        # A new code starts over.
        verification.send_code(account, "me@example.test")
        assert verification.confirm_code(account, code_in(smtp_server, 1)) == (
            Confirmation.VERIFIED
        )

    def test_right_on_the_last_attempt(self, account, smtp_server):
        verification.send_code(account, "me@example.test")
        code = code_in(smtp_server)
        for _ in range(4):
            verification.confirm_code(account, other_code(code))
        assert verification.confirm_code(account, code) == Confirmation.VERIFIED

    def test_max_attempts_setting(self, account, smtp_server, settings):
        settings.MULTISMTP = {"VERIFICATION_MAX_ATTEMPTS": 1}
        verification.send_code(account, "me@example.test")
        code = code_in(smtp_server)
        assert verification.confirm_code(account, other_code(code)) == Confirmation.WRONG
        assert verification.confirm_code(account, code) == Confirmation.TOO_MANY_ATTEMPTS

    def test_connection_change_after_verifying_needs_a_new_proof(self, account, smtp_server):
        verification.send_code(account, "me@example.test")
        assert verification.confirm_code(account, code_in(smtp_server)) == Confirmation.VERIFIED
        account = SmtpAccount.objects.get(pk=account.pk)
        assert account.verified_at is not None
        account.port = account.port + 1
        account.save()
        account.refresh_from_db()
        assert account.verified_at is None
