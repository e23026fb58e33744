"""Encrypted secret fields: never shown, never serialized in clear, robust to lost keys.

django-fernet-fields raises ``InvalidToken`` while *loading* a row whose value cannot be
decrypted, which breaks every query touching the table (the admin list included) and
invites overwriting the ciphertext. These fields load such a value as
:class:`Undecryptable`, keep the original ciphertext when the row is saved again, and
let the transport report a clear error for that one account. They also read
``FERNET_KEYS`` afresh when they change, so ``override_settings`` can rotate keys.

A secret must not leave the database in clear text by the side doors Django opens for
every field: ``dumpdata`` and the serializers (``value_to_string``), ``model_to_dict``
(``value_from_object``). Both give the Fernet token instead (serialized as
``fernet:<token>``), and ``loaddata`` stores such a token unchanged, so a dump moves
between sites that share ``FERNET_KEYS`` without ever being decrypted. Any field class
with ``is_secret = True`` (see :func:`secret_fields`) is also kept out of the admin's
read-only displays and out of error reports; :class:`EncryptedSecretMixin` gives a new
encrypted field all of this at once.
"""

from __future__ import annotations

import binascii
from base64 import urlsafe_b64decode
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.encoding import force_bytes, force_str
from fernet_fields import EncryptedCharField, EncryptedTextField, hkdf

#: How a secret appears in dumps: this prefix and the Fernet token.
SERIALIZED_PREFIX = "fernet:"


class Ciphertext:
    """A secret as stored (a Fernet token), never the plain value.

    Saving it stores the token unchanged; it prints as nothing, so a template, a log
    line or a form that meets it shows no secret.
    """

    def __init__(self, ciphertext: bytes) -> None:
        self.ciphertext = ciphertext

    def __bool__(self) -> bool:
        return True

    def __str__(self) -> str:
        return ""

    def __repr__(self) -> str:
        return "<encrypted secret>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ciphertext) and other.ciphertext == self.ciphertext

    def __hash__(self) -> int:
        return hash(self.ciphertext)

    def serialized(self) -> str:
        return SERIALIZED_PREFIX + self.ciphertext.decode("ascii")


class Undecryptable(Ciphertext):
    """A stored secret the current keys cannot decrypt; saving it keeps the ciphertext."""

    def __repr__(self) -> str:
        return "<Undecryptable secret>"


def current_keys() -> tuple[str, ...]:
    keys = getattr(settings, "FERNET_KEYS", None)
    if keys is None:
        keys = [settings.SECRET_KEY]
    return tuple(keys)


_fernets: dict[tuple[tuple[str, ...], bool], MultiFernet] = {}


def fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    use_hkdf = bool(getattr(settings, "FERNET_USE_HKDF", True))
    cache_key = (keys, use_hkdf)
    if cache_key not in _fernets:
        derived = [hkdf.derive_fernet_key(k) if use_hkdf else k for k in keys]
        _fernets[cache_key] = MultiFernet([Fernet(k) for k in derived])
    return _fernets[cache_key]


def is_secret(field: Any) -> bool:
    """Is this model field a secret (never displayed, serialized only encrypted)?"""
    return bool(getattr(field, "is_secret", False))


def secret_fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    """The model's secret fields: the registry the admin, the views and the tests use."""
    return [f for f in model._meta.concrete_fields if is_secret(f)]


def secret_field_names(model: type[models.Model]) -> tuple[str, ...]:
    return tuple(f.name for f in secret_fields(model))


def _parse_serialized(text: str) -> Ciphertext:
    token = text[len(SERIALIZED_PREFIX) :].strip().encode("ascii", "replace")
    try:
        raw = urlsafe_b64decode(token)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw or raw[0] != 0x80:  # Fernet's version byte
        raise ValidationError(
            "%(value)s... is not an encrypted value (expected fernet: and a Fernet token).",
            params={"value": text[:16]},
            code="invalid",
        )
    return Ciphertext(token)


class EncryptedSecretMixin:
    """What makes an encrypted field a secret; put it before the ``fernet_fields`` class.

    ``to_python`` accepts the serialized ``fernet:<token>`` (that is what ``loaddata``
    calls); model validation (``clean``) and saving do not, so a *typed* value that
    looks like a token is stored as the password it is: accepting it as ciphertext would
    let a person holding a token of someone else's password make the server decrypt it
    and send it to a host of their choosing.
    """

    is_secret = True

    @property
    def fernet(self) -> MultiFernet:
        return fernet_for(current_keys())

    def get_db_prep_save(self, value: Any, connection: Any) -> Any:
        if isinstance(value, Ciphertext):
            return connection.Database.Binary(value.ciphertext)
        return super().get_db_prep_save(value, connection)  # type: ignore[misc]

    def get_prep_value(self, value: Any) -> Any:
        # CharField.get_prep_value() would call to_python(): plain text stays plain text.
        if isinstance(value, str):
            return value
        return super().get_prep_value(value)  # type: ignore[misc]

    def from_db_value(self, value: Any, expression: Any, connection: Any, *args: Any) -> Any:
        if value is None:
            return None
        return self.reveal(Ciphertext(bytes(value)))

    def to_python(self, value: Any) -> Any:
        if isinstance(value, Ciphertext):
            return value
        if isinstance(value, str) and value.startswith(SERIALIZED_PREFIX):
            return _parse_serialized(value)
        return super().to_python(value)  # type: ignore[misc]

    def clean(self, value: Any, model_instance: Any) -> Any:
        if isinstance(value, str):
            # What a person typed: never parsed as a serialized token (see the class doc).
            self.validate(value, model_instance)  # type: ignore[attr-defined]
            self.run_validators(value)
            return value
        return super().clean(value, model_instance)  # type: ignore[misc]

    def run_validators(self, value: Any) -> None:
        # Kept ciphertext is not a password to check (max_length would call len()).
        if not isinstance(value, Ciphertext):
            super().run_validators(value)  # type: ignore[misc]

    def seal(self, value: Any) -> Any:
        """``value`` as ciphertext: a fresh token for a plain value; empty stays empty."""
        if value is None or value == "" or isinstance(value, Ciphertext):
            return value
        return Ciphertext(self.fernet.encrypt(force_bytes(value)))

    def reveal(self, value: Any) -> Any:
        """The plain value of a token (loaddata leaves one in memory), or Undecryptable.

        The decrypted text is never parsed as a serialized token: it is what was typed.
        """
        if isinstance(value, Ciphertext) and not isinstance(value, Undecryptable):
            try:
                plain = force_str(self.fernet.decrypt(value.ciphertext))
            except InvalidToken:
                return Undecryptable(value.ciphertext)
            return super().to_python(plain)  # type: ignore[misc]
        return value

    def value_from_object(self, obj: Any) -> Any:
        # model_to_dict() and the serializers read fields through here.
        return self.seal(super().value_from_object(obj))  # type: ignore[misc]

    def value_to_string(self, obj: Any) -> str:
        value = self.value_from_object(obj)
        if isinstance(value, Ciphertext):
            return value.serialized()
        return "" if value is None else str(value)


class EncryptedPasswordField(EncryptedSecretMixin, EncryptedCharField):  # type: ignore[misc]
    """A password (or API key) kept encrypted; see :class:`EncryptedSecretMixin`."""


class EncryptedSecretTextField(EncryptedSecretMixin, EncryptedTextField):  # type: ignore[misc]
    """A long secret (an OAuth token or client secret); see :class:`EncryptedSecretMixin`."""
