"""`python -m bot chat`: the same core, personas and streaming, in a terminal.

On a terminal it is a REPL: line editing and history (prompt_toolkit), answers rendered as
Markdown and streamed in place, Ctrl-C stopping the answer being written (the part shown stays,
marked stopped, as a Stop button does in Slack and Discord), `/help` for the rest. With stdin
from a pipe or file, each line is one message and each answer is printed once complete, as
plain text: scriptable. Log lines never reach the chat: they go to a file (`chat -v`: stderr).

It is a platform like the others (`ConsoleAdapter` is an `Adapter` over a `Core`), the smallest
one: a new platform starts from this shape (docs/architecture.md, "The contract").

- `adapter.py`: the platform: terminal or pipe, and the commands both share
- `repl.py`: the terminal's prompt, keys and answers in place
- `surfaces.py`: where an answer is written (in place on a terminal, collected for a pipe)
- `files.py`: `/attach PATH`
"""

from adapters.console.adapter import PLATFORM, ConsoleAdapter, conversation_for

__all__ = ["PLATFORM", "ConsoleAdapter", "conversation_for"]
