"""MCP_CONFIG: the `mcpServers` shape, `${VAR}` expansion, and each bad entry refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.config import ConfigError, load_settings
from bot.tools.config import ToolConfigError, load, parse


def test_stdio_and_http_servers_with_variables_expanded(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {
        "orders": {"command": "uvx", "args": ["orders-mcp", "--key=${KEY}"], "env": {"TOKEN": "${KEY}"},
                   "cwd": "/srv", "approve": "always", "timeout": 5, "tools": ["lookup_order"]},
        "status": {"url": "https://${HOST}/mcp", "headers": {"Authorization": "Bearer ${KEY}"}},
    }}))
    orders, status = load(path, {"KEY": "s3cret", "HOST": "status.example"})
    assert (orders.transport, orders.args, orders.env, orders.cwd) == (
        "stdio", ("orders-mcp", "--key=s3cret"), {"TOKEN": "s3cret"}, "/srv")
    assert (orders.approve, orders.timeout, orders.allows("lookup_order"), orders.allows("refund")) == (
        "always", 5.0, True, False)
    assert (status.transport, status.url, status.headers) == (
        "http", "https://status.example/mcp", {"Authorization": "Bearer s3cret"})
    assert (status.approve, status.timeout, status.allows("anything")) == ("writes", 30.0, True)


@pytest.mark.parametrize(("raw", "says"), [
    ({}, "mcpServers"),
    ({"mcpServers": {"a": {}}}, "either"),
    ({"mcpServers": {"a": {"command": "x", "url": "http://y"}}}, "either"),
    ({"mcpServers": {"a": {"command": "x", "approve": "sometimes"}}}, "approve"),
    ({"mcpServers": {"a": {"command": "x", "timeout": 0}}}, "timeout"),
    ({"mcpServers": {"a": {"command": "x", "timeout": True}}}, "timeout"),
    ({"mcpServers": {"a": {"command": "x", "args": "one"}}}, "args"),
    ({"mcpServers": {"a": {"command": "x", "tools": "lookup"}}}, "tools"),
    ({"mcpServers": {"a": {"url": "http://y", "headers": {"k": 1}}}}, "headers"),
    ({"mcpServers": {"a__b": {"command": "x"}}}, "name"),
    ({"mcpServers": {"a": {"command": "x", "env": {"K": "${MISSING}"}}}}, "MISSING"),
])
def test_bad_entries_are_refused_with_the_reason(raw: Any, says: str) -> None:
    with pytest.raises(ToolConfigError, match=says):
        parse(raw, {})


def test_unreadable_and_non_json_files(tmp_path: Path) -> None:
    with pytest.raises(ToolConfigError, match="cannot read"):
        load(tmp_path / "absent.json", {})
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ToolConfigError, match="not JSON"):
        load(tmp_path / "bad.json", {})


def test_the_shipped_example_parses() -> None:
    specs = load(Path(__file__).resolve().parents[2] / "deploy" / "mcp.example.json", {})
    assert {s.name for s in specs} >= {"time", "fetch"}


def test_settings_read_the_file_once_and_a_bad_one_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {
        "status": {"url": "https://status.example/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}},
        "orders": {"command": "orders-mcp", "env": {"ORDERS_KEY": "k-123"}},
    }}))
    env = {"TOGETHER_API_KEY": "x", "MCP_CONFIG": str(path), "TOKEN": "t-456"}
    settings = load_settings(env, dotenv=False)
    assert [s.name for s in settings.tools.servers] == ["orders", "status"]
    # What the file's secrets expand to is redacted from the logs like every other secret.
    assert {"Bearer t-456", "k-123"} <= set(settings.secrets())
    with pytest.raises(ConfigError, match=r"MCP_CONFIG .*\$\{TOKEN\} is not set"):
        load_settings({"TOGETHER_API_KEY": "x", "MCP_CONFIG": str(path)}, dotenv=False)
