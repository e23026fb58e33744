"""The plain-mail writer must produce Django's own bytes, or nothing.

:mod:`django_multismtp.plainmail` writes the wire bytes of simple text messages without
the email package. Its only licence is that the bytes are exactly what Django's
``message()`` renders on the running Django line; these tests render generated
messages both ways, many of them on the edges of what the writer accepts (header lines
of 77 to 80 characters, body lines around 78 and 998, spaces, specials, encoded-word
openers, non-ASCII, display names that need quoting), and compare.
"""

from __future__ import annotations

import copy
import random
import string

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.test import override_settings

from django_multismtp import plainmail
from django_multismtp.compat import LEGACY_MIME, mail_date, render_message
from django_multismtp.outgoing import Outgoing

PRINTABLE = string.ascii_letters + string.digits + string.punctuation


def _word(rng: random.Random, alphabet: str = PRINTABLE, low: int = 1, high: int = 12) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def _subject(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.05:
        return ""
    if kind < 0.08:
        return rng.choice(["=?utf-8?q?caf=C3=A9?=", "Caf\u00e9 ready", " leading", "trailing "])
    if kind < 0.10:
        return "two  spaces" if rng.random() < 0.5 else "tab\there"
    words = []
    target = rng.choice([10, 20, 40, 66, 67, 68, 69, 70, 90])
    while len(" ".join(words)) < target:
        words.append(_word(rng))
    return " ".join(words)[: rng.choice([target, target + 1, 200])]


def _spec(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.02:
        return "J\u00f6rg@example.com"
    if kind < 0.04:
        return "user@b\u00fccher.example"
    if kind < 0.06:
        return '"quoted local"@example.com'
    local = ".".join(
        _word(rng, string.ascii_letters + string.digits + "+_-'=", 1, 8)
        for _ in range(rng.randint(1, 2))
    )
    return f"{local}@{_word(rng, string.ascii_lowercase, 1, 10)}.example"


def _address(rng: random.Random) -> str:
    kind = rng.random()
    spec = _spec(rng)
    if kind < 0.55:
        return spec
    if kind < 0.93:
        name = " ".join(
            _word(rng, string.ascii_letters + string.digits, 1, 8) for _ in range(rng.randint(1, 3))
        )
        return f"{name} <{spec}>"
    return rng.choice(
        [
            f"J. Smith <{spec}>",
            f'"Smith, Ann" <{spec}>',
            f"Ren\u00e9e <{spec}>",
            f"Ann  Lee <{spec}>",
        ]
    )


#: Non-ASCII text of 2, 3 and 4 bytes a character, and the characters a body may not
#: hold for the writer (line separators, C1 controls, a lone surrogate).
WIDE = "\u00e9\u00fc\u00df\u4e2d\u6587\U0001f600"
ODD = ["\u2028", "\x85", "\ud800", "\x1c", "\r"]


def _body(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.05:
        return ""
    if kind < 0.10:
        return rng.choice(
            ["cr\r\nlf\n", "nul\x00", "vt\x0bff\x0c", "From me\n.dot\n", "= \n=\n", " \t\n"]
        )
    alphabet = PRINTABLE + " \t"
    if rng.random() < 0.3:
        alphabet += WIDE * 4
    lines = []
    for _ in range(rng.choice([1, 3, 6, 10, 11, 14])):
        edge = rng.random() < 0.15
        length = rng.choice(
            [79, 87, 120, 997, 998, 999] if edge else [0, 5, 30, 39, 40, 60, 77, 78]
        )
        line = "".join(rng.choice(alphabet) for _ in range(length))
        if rng.random() < 0.02:
            line += rng.choice(ODD)
        lines.append(line)
    return "\n".join(lines) + rng.choice(["", "\n", "\n\n", " ", "="])


def _message(rng: random.Random) -> EmailMessage:
    cls = EmailMultiAlternatives if rng.random() < 0.4 else EmailMessage
    message = cls(
        subject=_subject(rng),
        body=_body(rng),
        from_email=_address(rng),
        to=[_address(rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))],
        cc=[_address(rng)] if rng.random() < 0.2 else [],
        reply_to=[_address(rng)] if rng.random() < 0.2 else [],
        headers={"Message-ID": f"<{rng.randint(1, 10**12)}.{rng.randint(1, 99999)}@host.example>"},
    )
    if rng.random() < 0.15:
        message.content_subtype = "html"
    if rng.random() < 0.05:
        message.extra_headers["X-Campaign"] = "spring"
    if rng.random() < 0.03:
        message.attach("a.txt", "attached", "text/plain")
    if rng.random() < 0.03 and isinstance(message, EmailMultiAlternatives):
        message.attach_alternative("<p>hi</p>", "text/html")
    return message


def _both(message: EmailMessage) -> tuple[bytes | None, bytes]:
    """Our bytes and Django's, rendered within one second (the Date has seconds): ours
    between two renderings by Django that agree.

    Only for messages we write: the others may be multipart, with random boundaries.
    A message Django cannot render (a lone surrogate) must not be written either."""
    for _ in range(5):
        try:
            before = render_message(copy.copy(message))
        except UnicodeError:
            ours = plainmail.render(
                message,
                message.from_email,
                list(message.reply_to),
                legacy=LEGACY_MIME,
                date=mail_date,
            )
            assert ours is None
            return None, b""
        ours = plainmail.render(
            message, message.from_email, list(message.reply_to), legacy=LEGACY_MIME, date=mail_date
        )
        if ours is None:
            return None, before
        after = render_message(copy.copy(message))
        if before == after:
            return ours, after
    raise AssertionError("the clock ticked on every try")  # pragma: no cover


@pytest.mark.parametrize("seed", range(2))
def test_generated_messages_render_as_django_renders_them(seed: int) -> None:
    rng = random.Random(seed)
    written = 0
    for _ in range(600):
        message = _message(rng)
        ours, django = _both(message)
        if ours is not None:
            written += 1
            assert ours == django, (message.subject, message.body, message.from_email)
    # The generator must exercise the writer, not only its refusals.
    assert written >= 100, written


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("Hello Ann,\n\nYour order is on its way.\n", id="typical"),
        pytest.param("Gr\u00fc\u00dfe aus K\u00f6ln,\n\u4e2d\u6587 \U0001f600\n", id="8bit"),
        pytest.param("long line " * 12 + "\n" + "next\n", id="ascii line over 78"),
        pytest.param("caf\u00e9 " * 30 + "\n" * 12 + "end", id="wide line over 78"),
    ],
)
def test_transactional_messages_take_the_fast_path(body: str) -> None:
    message = EmailMessage(
        subject="Your order 100042 has shipped",
        body=body,
        from_email="Shop <shop@example.com>",
        to=["ann.lee+orders@example.net"],
        headers={"Message-ID": "<1733570000.4242.1@host.example>"},
    )
    ours, django = _both(message)
    assert ours is not None
    assert ours == django


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: setattr(m, "subject", "Caf\u00e9"), id="non-ascii subject"),
        pytest.param(lambda m: setattr(m, "subject", "x" * 70), id="subject line folds"),
        pytest.param(lambda m: setattr(m, "subject", "=?utf-8?q?hi?="), id="encoded word"),
        pytest.param(lambda m: setattr(m, "body", "a\u2028b"), id="line separator in body"),
        pytest.param(lambda m: setattr(m, "body", "a\r\nb"), id="carriage return"),
        pytest.param(lambda m: setattr(m, "body", "a\ud800"), id="lone surrogate in body"),
        pytest.param(
            lambda m: setattr(m, "from_email", "J. Smith <j@example.com>"), id="name needs quotes"
        ),
        pytest.param(lambda m: setattr(m, "to", ["ann@b\u00fccher.example"]), id="idn domain"),
        pytest.param(
            lambda m: setattr(m, "to", [f"user{i}@example.com" for i in range(5)]), id="to folds"
        ),
        pytest.param(lambda m: m.extra_headers.update({"X-Tag": "a"}), id="extra header"),
        pytest.param(lambda m: setattr(m, "extra_headers", {}), id="no message-id"),
        pytest.param(lambda m: setattr(m, "encoding", "iso-8859-1"), id="other charset"),
        pytest.param(lambda m: setattr(m, "content_subtype", "calendar"), id="other subtype"),
        pytest.param(lambda m: m.attach("a.txt", "x", "text/plain"), id="attachment"),
    ],
)
def test_what_it_cannot_write_exactly_goes_through_django(change) -> None:  # type: ignore[no-untyped-def]
    message = EmailMessage(
        subject="Hello",
        body="Short body.\n",
        from_email="shop@example.com",
        to=["ann@example.net"],
        headers={"Message-ID": "<1.2@host.example>"},
    )
    assert plainmail.render(message, message.from_email, [], legacy=LEGACY_MIME, date=mail_date)
    change(message)
    assert (
        plainmail.render(message, message.from_email, [], legacy=LEGACY_MIME, date=mail_date)
        is None
    )


def test_subclasses_and_lazy_strings_go_through_django() -> None:
    from django.utils.functional import lazy

    class Custom(EmailMessage):
        pass

    args = {"subject": "Hi", "body": "b", "from_email": "a@example.com", "to": ["b@example.com"]}
    headers = {"Message-ID": "<1.2@host.example>"}
    assert (
        plainmail.render(
            Custom(**args, headers=headers), "a@example.com", [], legacy=LEGACY_MIME, date=mail_date
        )
        is None
    )
    lazy_text = lazy(lambda: "b@example.com", str)()
    for field, value in (("subject", lazy_text), ("body", lazy_text), ("to", [lazy_text])):
        message = EmailMessage(**{**args, field: value}, headers=headers)
        rendered = plainmail.render(
            message, "a@example.com", [], legacy=LEGACY_MIME, date=mail_date
        )
        assert rendered is None, field


@override_settings(DEFAULT_CHARSET="UTF-8")
def test_a_charset_written_otherwise_goes_through_django() -> None:
    message = EmailMessage(
        "Hi", "b", "a@example.com", ["b@example.com"], headers={"Message-ID": "<1.2@h.example>"}
    )
    assert (
        plainmail.render(message, "a@example.com", [], legacy=LEGACY_MIME, date=mail_date) is None
    )


@override_settings(EMAIL_USE_LOCALTIME=True, TIME_ZONE="Asia/Kolkata", USE_TZ=True)
def test_local_time_dates_match_django() -> None:
    message = EmailMessage(
        "Hi", "b", "a@example.com", ["b@example.com"], headers={"Message-ID": "<1.2@h.example>"}
    )
    ours, django = _both(message)
    assert ours is not None and b"+0530" in ours
    assert ours == django


def test_the_engine_sends_the_account_sender_through_the_fast_path() -> None:
    """Outgoing.render applies an account's sender without copying the message, and the
    bytes are those Django renders for the copy the slow path makes."""
    from django_multismtp.hints import Hints
    from django_multismtp.models import SmtpAccount

    message = EmailMessage("Hi", "Body\n", None, ["b@example.com"])
    item = Outgoing.prepare(0, message, Hints(), None, measure=False)
    account = SmtpAccount(
        name="x",
        from_email="support@example.com",
        from_name="Support Team",
        reply_to="help@example.com",
    )
    for _ in range(5):
        slow = copy.copy(item.base)
        slow.from_email, slow.reply_to = "Support Team <support@example.com>", ["help@example.com"]
        before = render_message(slow)
        ours = item.render(account)
        if before == render_message(slow):
            break
    assert b"From: Support Team <support@example.com>\r\n" in ours
    assert b"Reply-To: help@example.com\r\n" in ours
    assert ours == before
