"""The parsers of untrusted files: a PDF's text, an image decoded and downscaled.

They run only inside a sandbox worker (`bot.files.parse_worker`, started by `bot.files.sandbox`),
never in the bot's own process: a crafted file can cost them seconds of CPU and
hundreds of MB, which the worker's limits cut short. This module imports nothing of
the bot but `bot.conversations.sanitize`, so a worker starts small.

A parser raises `ValueError` with a reason a person may read for a file it cannot use.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

from bot.conversations import sanitize

MAX_IMAGE_PIXELS = 40_000_000  # larger images are refused from their header, before any decoding


class TooLarge(ValueError):
    """The file declares more than a parser takes (its reason may be shown)."""


def preload() -> None:
    """Import the parsers' libraries (and Pillow's format plugins) ahead of the first file, so
    their start-up is not counted in a file's time, nor under the memory cap."""
    import pypdf  # noqa: F401
    from PIL import Image, ImageOps  # noqa: F401

    Image.init()


def pdf_text(data: bytes, max_chars: int) -> str:
    """The text of a PDF's pages, up to `max_chars`."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ValueError("it is an encrypted PDF")
        parts: list[str] = []
        size = 0
        for number, page in enumerate(reader.pages, 1):
            text = page.extract_text() or ""
            parts.append(f"[page {number}]\n{text.strip()}")
            size += len(parts[-1])
            if size > max_chars:
                break
    except (ValueError, MemoryError):
        raise
    except (PdfReadError, Exception) as error:  # pypdf raises many kinds on damaged files
        raise ValueError("it is not a PDF I can read") from error
    text = sanitize.clean("\n\n".join(parts))
    if not text.replace("[page", "").strip(" ]0123456789\n"):
        raise ValueError("it has no text to read (a scanned PDF?)")
    return text[:max_chars]


def downscaled(data: bytes, max_side: int, *, jpeg: bool = False) -> str:
    """The image as a data URL, fitted within `max_side` pixels (PNG stays PNG, the rest JPEG;
    `jpeg`: JPEG whatever it was, the smallest for a request that must shrink).

    Its size is read from the header first: a small file can declare a picture whose
    decoded pixels take gigabytes, and such a picture is refused before it is decoded."""
    from PIL import Image, ImageOps

    # Pillow's own bomb check (an error from twice its limit) is replaced by the one below,
    # which refuses from the limit itself and says the size.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as opened:  # reads the header only
            width, height = opened.size
            if width * height > MAX_IMAGE_PIXELS:
                raise TooLarge(
                    f"it is {width:,} × {height:,} pixels; I open images of up to "
                    f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels"
                )
            source = opened.format or ""
            if source == "JPEG":
                opened.draft("RGB", (max_side, max_side))  # decode at a reduced size: much faster
            image = ImageOps.exif_transpose(opened)
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            keep_png = not jpeg and (source in ("PNG", "GIF", "BMP") or image.mode in ("RGBA", "LA", "P"))
            out = io.BytesIO()
            if keep_png:
                if image.mode not in ("RGB", "RGBA", "L", "LA"):
                    image = image.convert("RGBA")
                image.save(out, "PNG", optimize=False)
                mime = "image/png"
            else:
                image.convert("RGB").save(out, "JPEG", quality=75 if jpeg else 85)
                mime = "image/jpeg"
    except TooLarge:
        raise
    except Image.DecompressionBombError as error:
        raise ValueError("the image is too large to open") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError("it is not an image I can read") from error
    return f"data:{mime};base64,{base64.b64encode(out.getvalue()).decode('ascii')}"


# What a worker may be asked to do: a kind of file and its parser (bytes, a bound -> text).
def smaller_jpeg(data: bytes, max_side: int) -> str:
    return downscaled(data, max_side, jpeg=True)


PARSERS: dict[str, Callable[[bytes, int], str]] = {
    "pdf": pdf_text, "image": downscaled, "smaller": smaller_jpeg,
}
