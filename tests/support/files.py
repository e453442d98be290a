"""Files for the attachment tests: text, a PDF with text, images, and reading what the model got."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image


def pdf_with_text(*pages: str) -> bytes:
    """A small valid PDF whose pages show `pages` (Helvetica), with a correct xref table."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    font = 3 + 2 * len(pages)
    for i, text in enumerate(pages):
        content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _pdf(objects)


def image(width: int, height: int, fmt: str = "PNG", *, noise: bool = False) -> bytes:
    """An image of that size; `noise` makes it hard to compress (a photo's byte size)."""
    if noise:
        import os

        picture = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        picture = Image.new("RGB", (width, height), (200, 30, 30))
    out = io.BytesIO()
    picture.save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def image_parts(message: dict[str, Any]) -> list[Image.Image]:
    """The images of a request message's content parts, decoded from their data URLs."""
    content = message["content"]
    if isinstance(content, str):
        return []
    found = []
    for part in content:
        if part.get("type") == "image_url":
            url = part["image_url"]["url"]
            assert url.startswith("data:image/"), url[:40]
            found.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    return found


def text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


# -- hostile files, made here rather than kept as binaries ------------------------------------


def _pdf(objects: list[bytes]) -> bytes:
    """A PDF of these numbered objects (1 is the catalog), with a correct xref table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _pages_sharing(content: bytes, pages: int) -> bytes:
    """A PDF of `pages` pages that all draw one shared, Flate-compressed content stream."""
    import zlib

    packed = zlib.compress(content, 9)
    kids = " ".join(f"{4 + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream",
    ]
    font = 4 + pages
    objects += [
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 3 0 R "
        f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        for _ in range(pages)
    ]
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return _pdf(objects)


def pdf_bomb(pages: int = 10, operators: int = 990_000) -> bytes:
    """About 11 KB: `pages` pages sharing one content stream of `operators` empty text
    operators (`() Tj`: 1.98 M tokens, just under pypdf's 2 M per stream), which its text
    extraction reads again for each page: about 9 s of CPU a page."""
    return _pages_sharing(b"BT /F1 12 Tf " + b"() Tj " * operators + b"ET", pages)


def pdf_inflating(inflated: int = 70_000_000) -> bytes:
    """A PDF whose one content stream inflates to `inflated` bytes (from about 70 KB)."""
    return _pages_sharing(b" " * inflated, 1)


def png_of_size(width: int, height: int) -> bytes:
    """A one-colour RGB PNG of that size, written row by row: a 14,000 × 14,000 one is about
    0.6 MB of file and 588 MB of pixels once decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * (width * 3)  # filter byte, then black pixels
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
