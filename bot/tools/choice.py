"""Which servers a channel's persona may use: `/persona tools`, over BOT_TOOLS, within MCP_CONFIG."""

from __future__ import annotations

from bot.contract.commands import CommandError
from bot.tools.servers import ToolServers


def chosen(setting: str | None, default: str, configured: frozenset[str]) -> list[str]:
    """The servers a persona's `tools` setting (None: BOT_TOOLS) names, among those configured:
    a name no longer configured is dropped, never started."""
    value = (setting if setting is not None else default).strip().lower()
    if value in ("", "off", "none"):
        return []
    if value == "all":
        return sorted(configured)
    return [name for name in value.split(",") if name in configured]


class ToolCatalog:
    """What `/persona tools` and `/persona show` need of the configured servers."""

    def __init__(self, servers: ToolServers, default: str) -> None:
        self.servers = servers
        self.default = default
        self.names = frozenset(servers.servers)

    def check(self, value: str) -> None:
        if value == "all":
            return
        unknown = [n for n in value.split(",") if n not in self.names]
        if unknown:
            known = ", ".join(f"`{n}`" for n in sorted(self.names))
            raise CommandError(f"There is no tool server `{unknown[0]}` (servers: {known}).")

    def describe(self, setting: str | None) -> str:
        names = chosen(setting, self.default, self.names)
        source = "" if setting is not None else " (BOT_TOOLS)"
        if not names:
            return f"\n• tools: off{source}"
        lines = [f"\n• tools{source}:"]
        for name in names:
            server = self.servers.servers[name]
            if not server.up:
                lines.append(f"  ◦ `{name}`: unavailable right now")
                continue
            tools = ", ".join(
                f"`{t.name}`" + ("" if t.read_only or server.spec.approve == "never" else " (needs approval)")
                for t in server.tools
            )
            lines.append(f"  ◦ `{name}`: {tools or 'no tools'}")
        return "\n".join(lines)
