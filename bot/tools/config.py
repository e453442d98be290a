"""`MCP_CONFIG`: the operator's MCP servers, in the `mcpServers` shape every MCP client reads.

    {"mcpServers": {
        "orders": {"command": "uvx", "args": ["orders-mcp"], "env": {"KEY": "${ORDERS_KEY}"},
                   "approve": "writes", "timeout": 30, "tools": ["lookup_order"]},
        "status": {"url": "https://status.example/mcp", "headers": {"Authorization": "Bearer ${T}"}}}}

`${VAR}` is expanded from the bot's environment anywhere in a string, so secrets stay out of the
file; a variable that is not set is an error at start, never an empty secret sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

APPROVE_MODES = ("writes", "always", "never")
Approve = Literal["writes", "always", "never"]
DEFAULT_TIMEOUT = 30.0
SEPARATOR = "__"  # between a server's name and its tool's in the names the model sees
_NAME = re.compile(r"^[A-Za-z0-9-]{1,32}$")  # no "_" run: `server__tool` must split back
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ToolConfigError(ValueError):
    """MCP_CONFIG cannot be used; the message says where and why, in one line."""


@dataclass(frozen=True)
class ServerSpec:
    name: str
    command: str = ""  # stdio: the child process
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""  # streamable HTTP
    headers: Mapping[str, str] = field(default_factory=dict)
    approve: Approve = "writes"
    timeout: float = DEFAULT_TIMEOUT
    tools: frozenset[str] | None = None  # the allow-list; None: every tool the server lists

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"

    def allows(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools


def expand(value: str, environ: Mapping[str, str], where: str) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ToolConfigError(f"MCP_CONFIG {where}: ${{{name}}} is not set in the environment")
        return environ[name]

    return _VARIABLE.sub(one, value)


def load(path: str | Path, environ: Mapping[str, str]) -> list[ServerSpec]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ToolConfigError(f"MCP_CONFIG {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise ToolConfigError(f"MCP_CONFIG {path}: not JSON ({exc})") from None
    return parse(raw, environ)


def parse(raw: Any, environ: Mapping[str, str]) -> list[ServerSpec]:
    servers = raw.get("mcpServers") if isinstance(raw, dict) else None
    if not isinstance(servers, dict):
        raise ToolConfigError('MCP_CONFIG: expected an object with "mcpServers"')
    return [_server(name, entry, environ) for name, entry in sorted(servers.items())]


def _strings(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ToolConfigError(f"MCP_CONFIG {where}: expected an object of strings")
    return {str(k): v for k, v in value.items()}


def _server(name: str, entry: Any, environ: Mapping[str, str]) -> ServerSpec:
    where = f"server {name!r}"
    if not _NAME.match(name):
        raise ToolConfigError(f"MCP_CONFIG {where}: a name is letters, digits and '-', up to 32")
    if not isinstance(entry, dict):
        raise ToolConfigError(f"MCP_CONFIG {where}: expected an object")
    command, url = entry.get("command"), entry.get("url")
    if bool(command) == bool(url):
        raise ToolConfigError(f"MCP_CONFIG {where}: give either \"command\" (stdio) or \"url\" (HTTP)")
    if not isinstance(command or url, str):
        raise ToolConfigError(f"MCP_CONFIG {where}: \"command\"/\"url\" must be a string")
    args = entry.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ToolConfigError(f"MCP_CONFIG {where}: \"args\" must be a list of strings")
    approve = entry.get("approve", "writes")
    if approve not in APPROVE_MODES:
        raise ToolConfigError(f"MCP_CONFIG {where}: \"approve\" is one of {', '.join(APPROVE_MODES)}")
    timeout = entry.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ToolConfigError(f"MCP_CONFIG {where}: \"timeout\" is a positive number of seconds")
    tools = entry.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, str) for t in tools)):
        raise ToolConfigError(f"MCP_CONFIG {where}: \"tools\" must be a list of tool names")
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ToolConfigError(f"MCP_CONFIG {where}: \"cwd\" must be a string")

    def x(value: str) -> str:
        return expand(value, environ, where)

    return ServerSpec(
        name=name,
        command=x(command) if command else "",
        args=tuple(x(a) for a in args),
        env={k: x(v) for k, v in _strings(entry.get("env"), f"{where} env").items()},
        cwd=x(cwd) if cwd else None,
        url=x(url) if url else "",
        headers={k: x(v) for k, v in _strings(entry.get("headers"), f"{where} headers").items()},
        approve=approve,
        timeout=float(timeout),
        tools=frozenset(tools) if tools is not None else None,
    )
