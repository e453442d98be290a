"""The layers and their arrows (docs/architecture.md#layers), read from the source with `ast`.

- the core (`bot/`, except `bot/app/` and `bot/__main__.py`) imports only the core;
- the adapters (`adapters/`) import the core and each other, never the app layer;
- the app layer (`bot/app/`, with the entry point `bot/__main__.py`) imports both;
- no module imports itself back through others (no circle).

Every import counts wherever it stands (top of the file, inside a function, under
`TYPE_CHECKING`), so a late import cannot hide an arrow the wrong way or a circle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "adapters")
CORE, ADAPTERS, APP = "core", "adapters", "app"
ALLOWED = {CORE: {CORE}, ADAPTERS: {CORE, ADAPTERS}, APP: {CORE, ADAPTERS, APP}}
# The platforms' libraries: only adapters (and the app layer through them) load them.
PLATFORM_LIBRARIES = ("slack_sdk", "slack_bolt", "discord")


def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def layer(module: str) -> str:
    if module == "bot.__main__" or module == "bot.app" or module.startswith("bot.app."):
        return APP
    return ADAPTERS if module.split(".")[0] == "adapters" else CORE


def imported_names(module: str, tree: ast.AST) -> Iterator[str]:
    """Every dotted name `module` imports, as precisely as the source says (`from a import b` is
    `a.b`, which is a module or a name in `a`)."""
    is_package = MODULES[module].name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}"


def owner(name: str) -> str | None:
    """The project's module that `name` is (or is in); None for the standard library and others."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = {owner(name) for name in imported_names(module, tree)}
        edges[module] = {target for target in targets if target and target != module}
    return edges


def external_imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    return {name.split(".")[0] for name in imported_names(module, tree) if owner(name) is None}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle once, as the modules along it (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_three_layers_are_all_there() -> None:
    layers = {layer(module) for module in MODULES}
    assert layers == {CORE, ADAPTERS, APP}
    assert {"bot.app.cli", "bot.app.service", "bot.app.check", "bot.__main__"} <= set(MODULES)
    core = {"bot.engine", "bot.ops.problems", "adapters.slack.check", "adapters.discord.check"}
    assert core <= set(MODULES)


def test_late_imports_are_seen() -> None:
    # bot.app.cli imports the check and the service inside a function, and each platform object its
    # adapter: the graph still has those arrows.
    edges = graph()
    assert {"bot.app.check", "bot.app.service"} <= edges["bot.app.cli"]
    assert {"adapters.slack.app", "adapters.slack.check"} <= edges["adapters.slack.platform"]
    assert edges["bot.__main__"] == {"bot.app.cli"}


def test_every_arrow_points_down() -> None:
    wrong = [
        f"{module} ({layer(module)}) imports {target} ({layer(target)})"
        for module, targets in sorted(graph().items())
        for target in sorted(targets)
        if layer(target) not in ALLOWED[layer(module)]
    ]
    assert wrong == []


def test_the_core_loads_no_platform_library() -> None:
    loads = {
        module: sorted(external_imports(module) & set(PLATFORM_LIBRARIES))
        for module in MODULES
        if layer(module) == CORE
    }
    assert {module: libraries for module, libraries in loads.items() if libraries} == {}


def test_no_import_circle() -> None:
    edges = graph()
    core = {module: targets & {m for m in edges if layer(m) == CORE}
            for module, targets in edges.items() if layer(module) == CORE}
    assert circles(core) == []
    assert circles(edges) == []  # nor anywhere else, adapters and app layer included


def test_a_circle_and_a_wrong_arrow_would_be_caught() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("bot.app.check") == APP and layer("bot.ops.problems") == CORE
    assert APP not in ALLOWED[ADAPTERS] and ADAPTERS not in ALLOWED[CORE]


def test_adapters_take_a_core_not_the_engine() -> None:
    """An adapter reaches the core only through the contract (`bot.contract.Core`), so a new
    platform implements one interface and a test can stand in for the engine; the console
    is a platform like the others."""
    inner = ("bot.engine", "bot.app.runtime", "bot.state", "bot.state.store", "bot.conversations.history")
    reaching_in = {
        module: sorted(t for t in targets if t.startswith(inner))
        for module, targets in graph().items()
        if layer(module) == ADAPTERS
    }
    assert {module: targets for module, targets in reaching_in.items() if targets} == {}
    assert "bot.contract" in graph()["adapters.console.adapter"]


def test_the_bot_names_no_platform() -> None:
    """Platforms are plug-ins (`bot.contract.platform`, found through the entry points of
    `chatbot.platforms` by `bot.platforms`): neither the core nor the app layer imports Slack's or
    Discord's package or reads their settings, so a platform is added without an edit to `bot/`.
    The one arrow left is `chat`'s, the console's own command (bot.app.cli)."""
    named = {
        module: sorted(t for t in targets if layer(t) == ADAPTERS)
        for module, targets in graph().items()
        if layer(module) != ADAPTERS
    }
    assert {module: targets for module, targets in named.items() if targets} == {
        "bot.app.cli": ["adapters.console"],
    }
    reading = {
        module: [word for word in ("settings.slack", "settings.discord", "SlackSettings", "DiscordSettings")
                 if word in MODULES[module].read_text(encoding="utf-8")]
        for module in MODULES
        if layer(module) != ADAPTERS and module != "bot.config"  # where their fields are still read
    }
    assert {module: words for module, words in reading.items() if words} == {}


def test_the_contract_imports_only_the_contract() -> None:
    """What crosses between the core and the platforms (windows, leases, the Core protocol, the
    platform plug-in) is declared in bot/contract/, which imports nothing else of the project,
    not even for type hints: a platform reads the contract alone."""
    contract = {m: t for m, t in graph().items() if m == "bot.contract" or m.startswith("bot.contract.")}
    assert contract["bot.contract.platform"] <= {"bot.contract.core", "bot.contract.installs"}
    outside = {m: sorted(t for t in ts if not t.startswith("bot.contract")) for m, ts in contract.items()}
    assert {m: t for m, t in outside.items() if t} == {}


def test_the_mcp_sdk_loads_only_with_a_session() -> None:
    """A bot without MCP servers never imports the SDK (about 0.4 s and 38 MB of a small pod's
    memory): bot/tools/servers.py imports it where a session starts."""
    code = "import sys, bot.engine, bot.app.service; print([m for m in sys.modules if m.startswith('mcp')])"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout
