"""An encrypted password field that survives a lost key and key rotation in tests.

django-fernet-fields raises ``InvalidToken`` while *loading* a row whose value cannot be
decrypted, which breaks every query touching the table (the admin list included) and
invites overwriting the ciphertext. This subclass loads such a value as
:class:`Undecryptable`, keeps the original ciphertext when the row is saved again, and
lets the transport report a clear error for that one account. It also reads
``FERNET_KEYS`` afresh when they change, so ``override_settings`` can rotate keys.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from fernet_fields import EncryptedCharField, hkdf


class Undecryptable:
    """A stored secret the current keys cannot decrypt; saving it keeps the ciphertext."""

    def __init__(self, ciphertext: bytes) -> None:
        self.ciphertext = ciphertext

    def __bool__(self) -> bool:
        return True

    def __str__(self) -> str:
        return ""

    def __repr__(self) -> str:
        return "<Undecryptable secret>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Undecryptable) and other.ciphertext == self.ciphertext

    def __hash__(self) -> int:
        return hash(self.ciphertext)


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


class EncryptedPasswordField(EncryptedCharField):  # type: ignore[misc]
    @property
    def fernet(self) -> MultiFernet:
        return fernet_for(current_keys())

    def get_db_prep_save(self, value: Any, connection: Any) -> Any:
        if isinstance(value, Undecryptable):
            return connection.Database.Binary(value.ciphertext)
        return super().get_db_prep_save(value, connection)

    def from_db_value(self, value: Any, expression: Any, connection: Any, *args: Any) -> Any:
        if value is None:
            return None
        try:
            return super().from_db_value(value, expression, connection, *args)
        except InvalidToken:
            return Undecryptable(bytes(value))

    def to_python(self, value: Any) -> Any:
        if isinstance(value, Undecryptable):
            return value
        return super().to_python(value)

    def run_validators(self, value: Any) -> None:
        # The kept ciphertext is not a password to check (max_length would call len()).
        if not isinstance(value, Undecryptable):
            super().run_validators(value)
