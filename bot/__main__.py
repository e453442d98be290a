"""`python -m bot run | chat | check | persona | usage`: the command line lives in `bot.app.cli`."""

from __future__ import annotations

import sys

from bot.app.cli import main

__all__ = ["main"]  # the `chatbot` console script (pyproject.toml) is bot.__main__:main

if __name__ == "__main__":
    sys.exit(main())
