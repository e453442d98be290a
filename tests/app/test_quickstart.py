"""The README's quickstart, pasted line by line into a shell on a clean copy of the repository.

The copy holds only the files git tracks (a file left out of a commit fails here as it would
on a newcomer's clone), no `.env` and no `.venv`. The commands run as written; only their
surroundings are the test's: the model API is the local fake (TOGETHER_BASE_URL, since the
quickstart's key is a placeholder), the chat reads one message from a pipe, and `scripts/test`
runs one small test file (PYTEST_ADDOPTS) instead of this whole suite again.

The copy installs from uv.lock into a virtualenv of its own, as a newcomer's first run does
(about 5 s); only the packages' files come from uv's cache (offline: tests reach no index), and
uv itself is the one running this suite (a newcomer's scripts install it first, pinned in
scripts/uv-requirements.txt). mypy reuses this checkout's cache for the installed packages.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.app.test_cli import ROOT
from tests.app.test_lock import uv
from tests.fakes.llm import Answer, FakeLLM

# The bot under test runs in a process of its own, on the wall clock (tests/support/clock.py).
pytestmark = pytest.mark.real_time



def quickstart_commands(readme: str) -> list[str]:
    """Every command line of the ```sh blocks in the README's Quickstart section."""
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def clean_copy(target: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # deleted in the work tree but not yet in the index: gone
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


async def shell(line: str, cwd: Path, env: dict[str, str], stdin: str = "") -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", line, cwd=cwd, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(stdin.encode()), 240)
    assert process.returncode is not None
    return process.returncode, out.decode()


def test_quickstart_is_what_the_readme_says() -> None:
    commands = quickstart_commands((ROOT / "README.md").read_text())
    assert commands == [
        "TOGETHER_API_KEY=your-key ./scripts/bot chat   # the main job: a conversation with the model "
        "in your terminal",
        "./scripts/test                                 # the tests: ruff, mypy, then pytest against a "
        "real Redis (started if needed)",
        "./scripts/bot chat --fake",
    ]
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("exec ./scripts/test")


@pytest.mark.long
@pytest.mark.timeout(900)
async def test_readme_quickstart_runs_on_a_clean_copy(tmp_path: Path) -> None:
    copy = clean_copy(tmp_path / "chatbot")
    assert not (copy / ".venv").exists() and not (copy / ".env").exists()
    settings = ("SLACK_", "DISCORD_", "TOGETHER_", "REDIS_", "BOT_", "PYTEST_", "VIRTUAL_ENV")
    base = {k: v for k, v in os.environ.items() if not k.startswith(settings)}
    base |= {"UV": uv(), "UV_OFFLINE": "1"}
    # mypy's cache: it checks each module's hash, so the copy's own files are still checked;
    # what it saves is the installed packages' analysis (about 4 s of CPU).
    base["MYPY_CACHE_DIR"] = str(ROOT / ".mypy_cache")
    async with FakeLLM() as llm:
        llm.answer = Answer.of("Hello from the fake model.")
        for n, line in enumerate(quickstart_commands((copy / "README.md").read_text())):
            if "scripts/test" in line:
                # One small file in one process (-n 0: no pytest-xdist workers to start for it).
                env = base | {"PYTEST_ADDOPTS": "-q -p no:cacheprovider -n 0 tests/core/test_commands.py"}
                code, out = await shell(line, copy, env)
                assert code == 0, out
                assert re.search(r"\d+ passed", out), out
            elif "--fake" in line:
                code, out = await shell(line, copy, base, stdin="hello\n")
                assert code == 0, out
                assert "This is the **fake model**" in out  # a pipe gets the plain text
            else:
                code, out = await shell(line, copy, base | {"TOGETHER_BASE_URL": llm.url}, stdin="hello\n")
                assert code == 0, out
                assert "Hello from the fake model." in out
                assert llm.requests[-1]["messages"][-1]["content"].endswith("hello")
                assert "REDIS_URL is not set" in out
            # The first command installs from the lock, in the copy; the others find it done.
            assert ("installing from uv.lock into .venv" in out) == (n == 0), out
