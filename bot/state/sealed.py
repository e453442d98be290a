"""Values encrypted at rest: Fernet (AES-128-CBC with HMAC-SHA256, from `cryptography`).

`SLACK_TOKEN_ENCRYPTION_KEY` is one key, or several separated by commas: the first
encrypts, any of them decrypts, so a key is rotated by putting the new one first and
dropping the old one once every record was written again (docs/operations.md).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["InvalidToken", "Sealer", "key_problem", "new_key"]


def new_key() -> str:
    return Fernet.generate_key().decode()


def key_problem(keys: str | None, name: str) -> str | None:
    """Why `keys` cannot be used (naming the setting `name`, never the value), or None."""
    if not keys:
        return f"{name} is not set"
    try:
        Sealer(keys)
    except ValueError:
        return (
            f"{name} is not a Fernet key (32 url-safe base64-encoded bytes, or several separated by "
            "commas)"
        )
    return None


class Sealer:
    def __init__(self, keys: str) -> None:
        """Raises ValueError when a key is malformed."""
        parts = [part.strip() for part in keys.split(",") if part.strip()]
        if not parts:
            raise ValueError("no key")
        self._fernet = MultiFernet([Fernet(part.encode()) for part in parts])

    def seal(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def open(self, sealed: str) -> str:
        """Raises InvalidToken when no key opens it (another key, or altered)."""
        return self._fernet.decrypt(sealed.encode()).decode()
