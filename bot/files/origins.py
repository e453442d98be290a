"""Which hosts a platform's credentials may go to (a file link names its own host).

A file object in an event carries a download URL. A forged or odd one can name any
host, and a download that carried the bot token there would hand the token over.
`Origins` is the set of scheme, host and port a platform's token (or its fetches at
all) may go to; adapters check every URL and every redirect against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, lower case; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or DEFAULT_PORTS[scheme]


def host_of(url: str) -> str:
    """The host a URL names, for a log line (never the rest: paths may carry signatures)."""
    found = origin(url)
    return found[1] if found else "(not an http URL)"


@dataclass(frozen=True)
class Origins:
    allowed: frozenset[tuple[str, str, int]]

    @classmethod
    def of(cls, *urls: str | None) -> Origins:
        """The origins of these URLs (`https://files.slack.com`, a configured API URL…)."""
        return cls(frozenset(o for url in urls if url and (o := origin(url)) is not None))

    def trusts(self, url: str) -> bool:
        return origin(url) in self.allowed
