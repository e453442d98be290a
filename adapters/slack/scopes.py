"""The bot scopes the install link asks for: read from deploy/slack/manifest.yml, the one list.

The manifest is ours and simple, so a few lines read its `oauth_config: scopes: bot:`
list instead of a YAML library. It is found next to the code (a checkout or an editable
install) or in the working directory (the image copies it to /app/deploy/slack/).
"""

from __future__ import annotations

import re
from pathlib import Path

from bot.config import ConfigError

RELATIVE = Path("deploy") / "slack" / "manifest.yml"
PLACES = (Path(__file__).resolve().parents[2] / RELATIVE, Path.cwd() / RELATIVE)
_BOT_LIST = re.compile(r"^oauth_config:\n\s+scopes:\n(\s+)bot:\n((?:\1\s+- .*\n)+)", re.MULTILINE)


def manifest_path() -> Path:
    for path in PLACES:
        if path.is_file():
            return path
    raise ConfigError(
        f"multi-workspace mode reads the bot scopes from {RELATIVE}, which is not at "
        f"{' nor '.join(str(p) for p in PLACES)}: run from the repository (or the image's /app)."
    )


def bot_scopes(manifest: str | None = None) -> list[str]:
    text = manifest if manifest is not None else manifest_path().read_text(encoding="utf-8")
    match = _BOT_LIST.search(text)
    if match is None:
        raise ConfigError(f"{RELATIVE} has no oauth_config.scopes.bot list.")
    return [line.split("- ", 1)[1].split("#")[0].strip() for line in match.group(2).splitlines()]
