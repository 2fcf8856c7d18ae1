"""Secrets at rest (webhook signing secrets; provider credentials later): Fernet through
`cryptography`, with several keys for rotation.

BEACON_ENCRYPTION_KEYS is a comma-separated list of Fernet keys (`Fernet.generate_key()`),
the first used to encrypt and all of them to decrypt; without it, one key derived from
SECRET_KEY. A value encrypted under a key that is no longer listed cannot be read: that
is an ImproperlyConfigured, not a silent empty secret.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not keys:
        derived = base64.urlsafe_b64encode(hashlib.sha256(f"beacon-encryption:{secret_key}".encode()).digest())
        keys = (derived.decode(),)
    try:
        return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])
    except (ValueError, TypeError):
        raise ImproperlyConfigured("BEACON_ENCRYPTION_KEYS holds a key that is not a Fernet key.") from None


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.BEACON_ENCRYPTION_KEYS), settings.SECRET_KEY)


def encrypt(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured("A stored secret was encrypted under a key BEACON_ENCRYPTION_KEYS lacks.") from None
