"""The sandbox: untrusted files are parsed in a bounded pool of worker processes.

A PDF or an image can be crafted to cost a parser minutes of CPU or gigabytes of
memory (a content stream of millions of operators, a stream that inflates 350-fold,
a 762 KB PNG of 196 megapixels). None of that runs in the bot's process: each parse
is a job for a worker (`bot.files.parse_worker`) that

- has a CPU-time limit (`RLIMIT_CPU`, `ATTACHMENT_PARSE_SECONDS` per job) and a cap on
  its address space (`RLIMIT_AS`, `ATTACHMENT_PARSE_MEMORY_MB`);
- is killed when a job outlasts the same number of seconds on the wall clock
  (a worker waiting on nothing uses no CPU, and a loaded machine gives it less);
- starts with an empty environment, so no token is within its reach;
- speaks JSON frames, never pickle, so a worker a file took over cannot run code here.

At most `ATTACHMENT_PARSE_WORKERS` workers exist at once, so ten hostile files cost
at most that many cores and that many memory caps; the others wait their turn. A
worker that hit a limit or died is discarded and the next job starts a fresh one. A
job that failed raises `ParseFailed`, whose reason names what happened in words a
person can read ("this PDF took too long to read"); the answer goes on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import bot

log = logging.getLogger(__name__)

HEADER = struct.Struct(">I")  # bot.files.parse_worker's frames
MAX_ANSWER_BYTES = 64_000_000  # a worker's answer past this is a misbehaving worker
START_TIMEOUT = 30.0  # seconds for a worker to load its parsers (slow on a busy machine)
WORKER = "from bot.files.parse_worker import main; main()"
WHAT = {"pdf": "PDF", "image": "image", "smaller": "image"}


@dataclass(frozen=True)
class SandboxLimits:
    seconds: float = 5.0  # CPU and wall-clock seconds for one file
    memory_mb: int = 128  # a worker's address space, its parsers included
    workers: int = 1  # workers at once: the cores and memory caps hostile files can take


class ParseFailed(ValueError):
    """The file could not be parsed; `str()` is the reason a person reads."""


class _Died(Exception):
    """The worker's pipes closed before it answered (or it said nonsense)."""


@dataclass(eq=False)
class _Worker:
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, *frames: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            for frame in frames:
                stdin.write(HEADER.pack(len(frame)) + frame)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as error:
            raise _Died from error

    async def receive(self) -> dict[str, object]:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            (size,) = HEADER.unpack(await stdout.readexactly(HEADER.size))
            if size > MAX_ANSWER_BYTES:
                raise _Died
            answer = json.loads(await stdout.readexactly(size))
        except (asyncio.IncompleteReadError, ConnectionResetError, ValueError) as error:
            raise _Died from error
        if not isinstance(answer, dict):
            raise _Died
        return answer

    async def kill(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        return await self.process.wait()


def _worker_env() -> dict[str, str]:
    """Only what Python needs to find the bot's code: none of the bot's settings or tokens."""
    root = str(Path(bot.__file__).resolve().parent.parent)
    return {"PYTHONPATH": root, "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}


class Sandbox:
    """The pool. `parse` is the one call; `close` ends every worker."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.workers)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self.started = 0  # workers started so far (the first ones and every replacement)

    @property
    def pids(self) -> list[int]:
        """The workers alive now, idle or busy."""
        return [w.pid for w in (*self._idle, *self._busy)]

    async def parse(self, kind: str, data: bytes, bound: int) -> str:
        """What the `kind` parser of `bot.files.parsers` makes of `data`; ParseFailed with a reason."""
        header = json.dumps({"kind": kind, "bound": bound}).encode()
        async with self._slots:
            worker = await self._take()
            self._busy.add(worker)
            try:
                return await self._job(worker, kind, header, data)
            finally:
                self._busy.discard(worker)

    async def close(self) -> None:
        workers, self._idle = [*self._idle, *self._busy], []
        self._busy.clear()
        await asyncio.gather(*(w.kill() for w in workers), return_exceptions=True)

    async def _job(self, worker: _Worker, kind: str, header: bytes, data: bytes) -> str:
        what = WHAT.get(kind, "file")
        kept = False
        try:
            try:
                await worker.send(header, data)
                async with asyncio.timeout(self.limits.seconds):
                    answer = await worker.receive()
            except TimeoutError:
                raise ParseFailed(self._too_long(what)) from None
            except _Died:
                code = await worker.kill()
                if code == -signal.SIGXCPU:
                    raise ParseFailed(self._too_long(what)) from None
                log.warning("a file reader (pid %d) ended with %s while reading a %s", worker.pid, code, what)
                raise ParseFailed("the file reader stopped while reading it") from None
            if answer.get("limit") == "memory":
                raise ParseFailed(f"reading this {what} needed more than {self.limits.memory_mb} MB")
            if "ok" in answer:
                kept = True
                return str(answer["ok"])
            kept = True  # a file the parser refused: the worker is fine
            raise ParseFailed(str(answer.get("error") or "it is not a file I can read"))
        finally:
            if kept:
                self._idle.append(worker)
            else:
                await asyncio.shield(worker.kill())  # hit a limit, died, or its job was cancelled

    def _too_long(self, what: str) -> str:
        return f"this {what} took too long to read (over {self.limits.seconds:g} s)"

    async def _take(self) -> _Worker:
        """An idle worker still alive (one killed while idle is dropped), or a new one."""
        while self._idle:
            worker = self._idle.pop()
            if worker.process.returncode is None:
                return worker
            log.warning("a file reader (pid %d) ended while idle", worker.pid)
        return await self._start()

    async def _start(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, str(self.limits.seconds), str(self.limits.memory_mb),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=_worker_env(), cwd=os.sep,
        )
        worker = _Worker(process)
        self.started += 1
        try:
            async with asyncio.timeout(START_TIMEOUT):
                ready = await worker.receive()
        except (TimeoutError, _Died):
            code = await worker.kill()
            log.error("a file reader did not start (exit %s): is ATTACHMENT_PARSE_MEMORY_MB too low?", code)
            raise ParseFailed("the file reader could not start") from None
        if not ready.get("ready"):
            await worker.kill()
            raise ParseFailed("the file reader could not start")
        return worker
