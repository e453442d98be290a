"""Files on a message: what is read, how, and what the model and the history get.

An adapter describes each file (`bot.contract.Attachment`: name, type, size, a
platform reference) and gives the turn a `fetch_file`; everything else is decided
here, the same for every platform:

- **kinds**: text (plain text, Markdown, code, JSON, CSV, logs…), PDF (its text,
  with pypdf), image (png, jpeg, gif, webp, bmp), and the rest, binary: named to the
  model, never fetched;
- **limits** (`AttachmentSettings`): files per message, bytes per file and per
  message, characters of text kept per message; a file over a limit is left out and
  the answer says which and why (`Intake.notes`), the rest is answered;
- **text** is decoded safely (UTF-8 or a BOM's encoding, invalid bytes replaced,
  control characters dropped) and kept in the history, bounded by `max_text_chars`;
- **images** are downscaled (Pillow) to `image_max_side` and sent as base64 data
  URLs; the history keeps only their reference, and a replayed turn fetches them
  again (through a small in-process cache);
- **failures** (refused, deleted, too large, timed out, unreadable) become a note,
  never a failed answer.

PDF text and image decoding and scaling run in the sandbox (`bot.files.sandbox`): worker
processes with CPU, memory and wall-clock limits, never the bot's own process. A file
that hits a limit is named in the answer with the reason. Text is decoded (bounded,
with no parser to exploit) in a thread: never on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

from bot.config import AttachmentSettings
from bot.contract import Attachment, FetchFailed, FetchFile, HistoryEntry
from bot.conversations import sanitize
from bot.files.sandbox import Sandbox, SandboxLimits

log = logging.getLogger(__name__)

TEXT, PDF, IMAGE, BINARY = "text", "pdf", "image", "binary"
MAX_NAME_CHARS = 200  # a file name as stored and shown
MAX_REF_CHARS = 500  # a platform reference as stored
MAX_REPLAYED_IMAGES = 4  # images of earlier turns sent again, newest first
CACHE_BYTES = 64_000_000  # downscaled images kept in memory for replays

IMAGE_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/gif", "image/webp", "image/bmp"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
TEXT_TYPES = {
    "application/json", "application/xml", "application/x-yaml", "application/yaml", "application/toml",
    "application/javascript", "application/x-javascript", "application/typescript", "application/sql",
    "application/x-sh", "application/x-shellscript", "application/x-python", "application/x-ndjson",
    "application/csv", "application/x-httpd-php", "application/graphql", "application/ld+json",
}
TEXT_EXTENSIONS = {
    ".txt", ".md", ".markdown", ".rst", ".log", ".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".xml",
    ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".env", ".properties", ".py", ".pyi", ".js",
    ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".kts", ".scala", ".go", ".rs", ".c", ".h",
    ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".pl", ".swift", ".m", ".sh", ".bash", ".zsh",
    ".fish", ".ps1", ".sql", ".html", ".htm", ".css", ".scss", ".vue", ".svelte", ".lua", ".r",
    ".dart", ".ex", ".exs", ".erl", ".hs", ".clj", ".tf", ".hcl", ".gradle", ".diff", ".patch",
    ".graphql", ".proto", ".svg", ".srt", ".vtt", ".tex", ".bib", ".adoc", ".org", ".dockerfile",
}
TEXT_NAMES = {
    "dockerfile", "makefile", "license", "readme", "changelog", "procfile", "gemfile", "vagrantfile",
}
# Binary types some platforms label text-like; never decoded as text.
BINARY_HINTS = ("zip", "octet-stream", "msword", "officedocument", "x-tar", "gzip", "x-7z", "executable")


def kind_of(attachment: Attachment) -> str:
    """What a file is, from its type and name (files are never sniffed: binary ones are not fetched)."""
    mime = attachment.mime.split(";")[0].strip().lower()
    path = PurePosixPath(attachment.name.lower())
    suffix = path.suffix
    if mime in IMAGE_TYPES or (not mime.startswith("image/") and suffix in IMAGE_EXTENSIONS):
        return IMAGE
    if mime == "application/pdf" or suffix == ".pdf":
        return PDF
    if any(hint in mime for hint in BINARY_HINTS) and suffix not in TEXT_EXTENSIONS:
        return BINARY
    if mime.startswith("text/") or mime in TEXT_TYPES or mime.endswith(("+json", "+xml")):
        return TEXT
    if suffix in TEXT_EXTENSIONS or path.name in TEXT_NAMES:
        return TEXT
    return BINARY


def takes_images(model: str, settings: AttachmentSettings) -> bool:
    """Whether a model takes images when no persona says (`BOT_VISION`, `VISION_MODELS`)."""
    if settings.vision != "auto":
        return settings.vision == "on"
    name = model.lower()
    return name in {m.lower() for m in settings.vision_models} or any(p in name for p in VISION_PATTERNS)


# Model names that take images (matched in lower case, anywhere in the name).
VISION_PATTERNS = (
    "vision", "-vl", "vl-", "llava", "pixtral", "gpt-4o", "gpt-4.1", "gpt-5", "llama-4", "gemma-3",
    "claude", "gemini",
)


@dataclass
class Intake:
    """One message's files, read: what the history keeps, the images to send, the notes to show."""

    files: tuple[Attachment, ...] = ()  # stored form: text extracted, images by reference
    images: dict[str, str] = field(default_factory=dict)  # ref -> data URL, this message's images
    notes: list[str] = field(default_factory=list)  # which file was left out or cut, and why

    @property
    def image_refs(self) -> list[str]:
        return [f.ref for f in self.files if kind_of(f) == IMAGE and not f.note]


class ImageCache:
    """Downscaled images by reference, bounded in bytes: replays within a process skip the fetch."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, str] = OrderedDict()
        self._size = 0

    def get(self, ref: str) -> str | None:
        url = self._items.get(ref)
        if url is not None:
            self._items.move_to_end(ref)
        return url

    def put(self, ref: str, url: str) -> None:
        if ref in self._items:
            self._size -= len(self._items.pop(ref))
        self._items[ref] = url
        self._size += len(url)
        while self._size > self.max_bytes and self._items:
            _, dropped = self._items.popitem(last=False)
            self._size -= len(dropped)


class Reader:
    """Reads the files of messages within the settings' limits."""

    def __init__(self, settings: AttachmentSettings) -> None:
        self.settings = settings
        self.cache = ImageCache()
        self.sandbox = Sandbox(SandboxLimits(
            settings.parse_seconds, settings.parse_memory_mb, settings.parse_workers
        ))

    async def close(self) -> None:
        """Ends the sandbox's workers."""
        await self.sandbox.close()

    async def read(self, attachments: Sequence[Attachment], fetch: FetchFile | None) -> Intake:
        """This message's files: text read, images fetched and downscaled, the rest named."""
        s = self.settings
        intake = Intake()
        if not attachments:
            return intake
        chosen: list[Attachment] = []
        budget = s.max_message_bytes
        for index, raw in enumerate(attachments):
            a = replace(raw, name=_clean_name(raw.name), ref=raw.ref[:MAX_REF_CHARS], text=None, note="")
            kind = kind_of(a)
            if index >= s.max_files:
                chosen.append(self._left_out(a, f"only {s.max_files} files are read per message", intake))
            elif a.unavailable:
                chosen.append(self._left_out(a, f"I could not fetch it: {a.unavailable}", intake))
            elif kind == BINARY:
                chosen.append(a)  # named to the model, not fetched
                intake.notes.append(f"`{a.name}` was not read: it is not a text file, a PDF or an image.")
            elif a.size > s.max_file_bytes:
                why = f"it is {_size(a.size)}, over the {_size(s.max_file_bytes)} limit per file"
                chosen.append(self._left_out(a, why, intake))
            elif a.size > budget:
                why = f"the message's files are over {_size(s.max_message_bytes)} together"
                chosen.append(self._left_out(a, why, intake))
            elif fetch is None or not a.ref:
                chosen.append(self._left_out(a, "this platform did not say where to fetch it", intake))
            else:
                budget -= a.size
                chosen.append(a)
        fetched = await asyncio.gather(*(
            self._fetch(a, fetch) if fetch is not None and _wanted(a) else _nothing() for a in chosen
        ))
        chars_left = s.max_text_chars
        files: list[Attachment] = []
        for a, data in zip(chosen, fetched, strict=True):
            if isinstance(data, FetchFailed):
                files.append(self._left_out(a, f"I could not fetch it: {data.reason}", intake))
                continue
            if data is None:
                files.append(a)
                continue
            kind = kind_of(a)
            if kind == IMAGE:
                try:
                    url = await self._image_url(a, data)
                except ValueError as error:
                    files.append(self._left_out(a, str(error), intake))
                    continue
                intake.images[a.ref] = url
                files.append(replace(a, size=a.size or len(data)))
                continue
            try:
                if kind == PDF:
                    text = await self.sandbox.parse("pdf", data, chars_left + 1)
                else:
                    text = await asyncio.to_thread(decoded, data, chars_left + 1)
            except ValueError as error:
                files.append(self._left_out(a, str(error), intake))
                continue
            if len(text) > chars_left:
                text = text[:chars_left]
                intake.notes.append(
                    f"`{a.name}` was cut: I read the first {s.max_text_chars:,} characters of a "
                    "message's files." if text else
                    f"`{a.name}` was left out: I read at most {s.max_text_chars:,} characters of a "
                    "message's files."
                )
            chars_left -= len(text)
            files.append(replace(a, size=a.size or len(data), text=text))
        intake.files = tuple(files)
        return intake

    async def complete(self, entries: Sequence[HistoryEntry], fetch: FetchFile | None) -> list[HistoryEntry]:
        """Entries rebuilt from a platform, with their files read as a new message's would be."""
        done: list[HistoryEntry] = []
        for entry in entries:
            if entry.attachments and entry.role == "user":
                intake = await self.read(entry.attachments, fetch)
                entry = replace(entry, attachments=intake.files)
            done.append(entry)
        return done

    async def replay(
        self, entries: Sequence[HistoryEntry], fetch: FetchFile | None, current: dict[str, str]
    ) -> dict[str, str]:
        """Data URLs for the images of earlier turns (the newest few), fetched again if not cached."""
        refs: list[Attachment] = []
        for entry in reversed(entries):
            for a in entry.attachments:
                if kind_of(a) == IMAGE and not a.note and a.ref and a.ref not in current:
                    refs.append(a)
        refs = refs[:MAX_REPLAYED_IMAGES]
        images = dict(current)

        async def one(a: Attachment) -> None:
            url = self.cache.get(a.ref)
            if url is None and fetch is not None:
                data = await self._fetch(a, fetch)
                if isinstance(data, FetchFailed) or data is None:
                    return
                try:
                    url = await self._image_url(a, data)
                except ValueError:
                    return
            if url is not None:
                images[a.ref] = url

        await asyncio.gather(*(one(a) for a in refs))
        return images

    async def _fetch(self, a: Attachment, fetch: FetchFile) -> bytes | FetchFailed:
        limit = min(self.settings.max_file_bytes, self.settings.max_message_bytes)
        try:
            async with asyncio.timeout(self.settings.fetch_timeout):
                return await fetch(a.ref, limit)
        except FetchFailed as failed:
            return failed
        except TimeoutError:
            return FetchFailed(f"it took over {self.settings.fetch_timeout:g} s")
        except Exception as exc:  # whatever the platform's library raises: a note, not a failed answer
            log.warning("could not fetch the file %s: %s", a.name, exc)
            return FetchFailed("the platform refused or failed the download")

    async def _image_url(self, a: Attachment, data: bytes) -> str:
        """The image downscaled (in the sandbox) as a data URL, cached by its ref;
        ValueError for what is not an image after all, or one that hit a limit."""
        url = await self.sandbox.parse("image", data, self.settings.image_max_side)
        self.cache.put(a.ref, url)
        return url

    @staticmethod
    def _left_out(a: Attachment, why: str, intake: Intake) -> Attachment:
        intake.notes.append(f"`{a.name}` was left out: {why}.")
        return replace(a, text=None, note=why)


def _wanted(a: Attachment) -> bool:
    return not a.note and kind_of(a) != BINARY


async def _nothing() -> None:
    return None


def _clean_name(name: str) -> str:
    name = sanitize.clean(name).replace("`", "'").replace("\n", " ").strip() or "file"
    return name[:MAX_NAME_CHARS]


def _size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1_000:
        return f"{n / 1_000:.1f} KB"
    return f"{n} bytes"


# -- text decoding (in a thread) ---------------------------------------------------------


def decoded(data: bytes, max_chars: int) -> str:
    """Text from bytes: UTF-8 (a BOM's encoding when there is one), bad bytes replaced."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError("it does not look like text (it has NUL bytes)")
    head = data[: max_chars * 4]  # no character takes more than 4 bytes
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head.decode("utf-16", errors="replace")
    else:
        text = head.decode("utf-8-sig", errors="replace")
    return sanitize.clean(text)[:max_chars]


def guess_mime(name: str) -> str:
    """A type for a file that came without one (the console's local files)."""
    return mimetypes.guess_type(name)[0] or ""
