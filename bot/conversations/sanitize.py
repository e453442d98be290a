"""Text from outside (platform messages, names, model output), made safe to store and send.

Python strings can hold lone UTF-16 surrogates (a JSON `"\\ud800"` decodes to one) that
no UTF-8 encoder accepts: the Redis client, httpx and the platforms' JSON would all
raise on them. They become U+FFFD here, at the edge, instead of failing an answer.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_UNENCODABLE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # keeps \t, \n, \r
# Characters that show nothing: a message of only these (and spaces) is empty.
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
                        "\u202a-\u202e\u2060-\u206f\u3164\ufeff\uffa0]")


def clean(text: str) -> str:
    """`text` with unencodable code points replaced and control characters removed."""
    if text.isascii() and text.isprintable():
        return text  # the common case costs one scan
    return _CONTROL.sub("", _UNENCODABLE.sub(REPLACEMENT, text))


def is_blank(text: str) -> bool:
    """True if nothing visible is left once whitespace and zero-width characters go."""
    return not _INVISIBLE.sub("", text).strip()
