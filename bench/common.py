"""Pieces every benchmark shares: ports, percentiles, CPU of a child process, tables, the bot as
a child process, cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis.asyncio as redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float], digits: int = 0) -> str:
    """Milliseconds: the value alone, or p50 / p95 of several."""
    if len(values) == 1:
        return f"{values[0] * 1000:.{digits}f}"
    return f"{pct(values, 0.5) * 1000:.{digits}f} / {pct(values, 0.95) * 1000:.{digits}f}"


def table(rows: list[dict[str, str]]) -> str:
    """A Markdown table, columns in the order of the first row's keys."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row[h] for h in header) + " |" for row in rows]
    return "\n".join(lines)


async def delete_prefix(redis_url: str, prefix: str) -> None:
    """Remove what a run left in Redis."""
    client = redis.Redis.from_url(redis_url)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def start_bot(
    model_url: str, redis_url: str, prefix: str, platform_env: dict[str, str], *,
    stderr: int | None = None, log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m bot run` in a child process, as in production, pointed at the fakes; its log
    goes to `stderr` (e.g. subprocess.DEVNULL), or appended to the file `log`, else here."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "TOGETHER_API_KEY": "bench-key",
        "TOGETHER_BASE_URL": model_url,
        "BOT_MODEL": "bench/model",
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "HEALTH_PORT": str(free_port()),
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "warning"),
        **platform_env,
    }
    # An empty working directory: no developer .env can switch other platforms on.
    workdir = tempfile.mkdtemp(prefix="bench-")
    if log is not None:
        with log.open("ab") as file:  # the child keeps its own copy
            return subprocess.Popen([sys.executable, "-m", "bot", "run"], cwd=workdir, env=env, stderr=file)
    return subprocess.Popen([sys.executable, "-m", "bot", "run"], cwd=workdir, env=env, stderr=stderr)


async def until_ready(url: str, within: float = 60.0) -> None:
    """Wait for a child bot's `/readyz` to answer 200."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} never became ready")
            await asyncio.sleep(0.1)  # polling a child process's readiness: the bench's schedule


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every child bot, as an orchestrator would; kill what is still there after 30 s."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


PROGRESS_NOTE = """first text = the model's first token → the first words shown, a final included (p90);
longest wait = per answer, the longest time between two visible changes while the model
streams (a wait that starts before the last token runs to the next change); parts =
messages per answer. Targets (issue 26): first text p90 ≤ 1 s, longest wait p90 ≤ 3 s, and
issue 8's (the targets column names what a run missed)."""


def print_progress(rows: list[dict[str, str]]) -> None:
    """Issue 26's "progress" table and what its columns mean."""
    if rows:
        print("progress (issue 26)\n")
        print(table(rows))
        print()
        print(PROGRESS_NOTE)
        print()

