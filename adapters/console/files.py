"""`/attach PATH`: local files sent with the next message."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.contract import Attachment, FetchFailed
from bot.files.attachments import guess_mime


class LocalFiles:
    """Files attached with `/attach PATH`, sent with the next message; read when the core asks."""

    def __init__(self) -> None:
        self.pending: list[Attachment] = []

    def attach(self, line: str) -> str:
        """`/attach PATH`: the reply to show."""
        path = Path(line.split(maxsplit=1)[1].strip() if " " in line.strip() else "").expanduser()
        if not str(path) or str(path) == ".":
            return "Give a file: `/attach PATH` (it goes with your next message)."
        if not path.is_file():
            return f"There is no file `{path}`."
        size = path.stat().st_size
        self.pending.append(Attachment(path.name, guess_mime(path.name), size, str(path.resolve())))
        names = ", ".join(f"`{a.name}`" for a in self.pending)
        return f"Attached {names}: it goes with your next message."

    def take(self) -> tuple[Attachment, ...]:
        taken, self.pending = tuple(self.pending), []
        return taken

    @staticmethod
    async def fetch(ref: str, limit: int) -> bytes:
        """A `bot.contract.FetchFile` over local paths."""
        return await asyncio.to_thread(_read, Path(ref), limit)


def _read(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as opened:
            data = opened.read(limit + 1)
    except OSError as error:
        raise FetchFailed(error.strerror or "it cannot be read") from None
    if len(data) > limit:
        raise FetchFailed(f"it is over {limit:,} bytes")
    return data
