"""The contract between the core (`bot`) and the platforms (`adapters`): both import it.

- what a platform gives the core: `Turn`s (with their event ids), typed commands
  (`bot.contract.commands`) and `ReplySurface`s (`bot.contract.surface`);
- what the core offers a platform: `Core`, and what the service runs: `Adapter`
  (`bot.contract.core`);
- what a platform installed by many workspaces keeps per installation: `Installs`
  (`bot.contract.installs`), handed to its adapter by the app layer;
- what a platform package exports to be found and run as a plug-in: `Platform`, with the
  `Host` the app layer lends it (`bot.contract.platform`).

docs/architecture.md, "The contract", walks through it.
"""

from bot.contract.commands import Command, CommandError, CommandLimits, parse
from bot.contract.core import (
    REASON_LABEL,
    REASON_MAX_CHARS,
    REASON_TITLE,
    VOTE_DOWN,
    VOTE_UP,
    Adapter,
    AdminCheck,
    Core,
    Pressed,
)
from bot.contract.installs import InstallRecords, Installs, OneTimeStates, Unreadable
from bot.contract.platform import Host, Platform
from bot.contract.surface import (
    Attachment,
    Author,
    Backfill,
    ChannelScope,
    Controls,
    ConversationKey,
    FetchFailed,
    FetchFile,
    FinishingSurface,
    HistoryEntry,
    ReplySurface,
    Sender,
    StepSurface,
    StepView,
    SurfaceLimits,
    SurfaceRateLimited,
    Turn,
)

__all__ = [
    "REASON_LABEL",
    "REASON_MAX_CHARS",
    "REASON_TITLE",
    "VOTE_DOWN",
    "VOTE_UP",
    "Adapter",
    "AdminCheck",
    "Attachment",
    "Author",
    "Backfill",
    "ChannelScope",
    "Command",
    "CommandError",
    "CommandLimits",
    "Controls",
    "ConversationKey",
    "Core",
    "FetchFailed",
    "FetchFile",
    "FinishingSurface",
    "HistoryEntry",
    "Host",
    "InstallRecords",
    "Installs",
    "OneTimeStates",
    "Platform",
    "Pressed",
    "ReplySurface",
    "Sender",
    "StepSurface",
    "StepView",
    "SurfaceLimits",
    "SurfaceRateLimited",
    "Turn",
    "Unreadable",
    "parse",
]
