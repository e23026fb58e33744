"""Envelope addresses: what the SMTP server is given for MAIL FROM and RCPT TO, and what
is refused before anything is sent (``django_multismtp.addresses``)."""

from __future__ import annotations

import pytest
from django.utils.translation import gettext_lazy

from django_multismtp.addresses import addr_spec, prep_address, prep_sender, sender_spec


@pytest.mark.parametrize(
    ("address", "envelope"),
    [
        ("ann.lee+news@example.com", "ann.lee+news@example.com"),
        ("o'brien@mail.example.co.uk", "o'brien@mail.example.co.uk"),
        ("Ann Lee <ann@example.com>", "ann@example.com"),
        ('"Lee, Ann" <ann@example.com>', "ann@example.com"),
        ('"ann lee"@example.com', '"ann lee"@example.com'),
        ("ann@bücher.example", "ann@xn--bcher-kva.example"),
        ("Ann <ann@bücher.example>", "ann@xn--bcher-kva.example"),
        ("webmaster", "webmaster"),  # Django allows a bare local part
        ("ann@[192.0.2.1]", "ann@[192.0.2.1]"),
    ],
)
def test_the_envelope_address(address, envelope):
    assert prep_address(address) == envelope
    assert prep_sender(address) == envelope


@pytest.mark.parametrize(
    "address",
    [
        "ann@example.com\r\nRCPT TO:<victim@example.net>",
        "ann@example.com\nBcc: victim@example.net",
        "ann@example.com, bob@example.com",
        "to@",
        "@example.com",
        "ann@@example.com",
        "ann lee@example.com",
        "jörg@example.com",  # a non-ASCII local part needs SMTPUTF8
        "",
    ],
)
def test_invalid_addresses_are_refused(address):
    with pytest.raises(ValueError, match="Invalid address"):
        prep_address(address)
    with pytest.raises(ValueError, match="Invalid address"):
        prep_sender(address)
    assert addr_spec(address) == ""
    assert sender_spec(address) == ""


def test_two_addresses_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="must be a single address"):
        prep_address("ann@example.com, bob@example.com")


def test_a_refusal_names_everything_that_is_wrong():
    with pytest.raises(ValueError) as caught:
        prep_address("ann lee@example.com")
    assert str(caught.value) == (
        "Invalid address 'ann lee@example.com': local-part is not dot-atom, "
        "quoted-string, or obs-local-part; missing '.' between words"
    )


def test_without_force_ascii_unicode_stays():
    assert prep_address("jörg@example.com", force_ascii=False) == "jörg@example.com"
    assert prep_address("ann@bücher.example", force_ascii=False) == "ann@bücher.example"
    assert prep_address("Jörg <jörg@bücher.example>", force_ascii=False) == "jörg@bücher.example"


def test_lazy_strings_are_addresses_too():
    assert prep_address(gettext_lazy("ann@example.com")) == "ann@example.com"
    assert prep_sender(gettext_lazy("Ann <ann@example.com>")) == "ann@example.com"


def test_comparison_form_is_lower_case():
    assert addr_spec("Ann Lee <Ann.Lee@Example.COM>") == "ann.lee@example.com"
    assert sender_spec("Ann Lee <Ann.Lee@Example.COM>") == "ann.lee@example.com"
    assert sender_spec("ANN@BÜCHER.example") == "ann@xn--bcher-kva.example"


def test_a_refused_sender_is_refused_every_time():
    # Answers are remembered; refusals are not turned into answers.
    for _ in range(2):
        with pytest.raises(ValueError):
            prep_sender("ann@example.com\r\nDATA")
    assert prep_sender("ann@example.com") == "ann@example.com"
