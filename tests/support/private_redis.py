"""A redis-server of the test's own, on a free port, that the test kills and restarts.

    server = PrivateRedis(tmp_path)   # nothing saved by itself; SAVE writes tmp_path/dump.rdb
    server.start(); await server.ready()
    server.kill()                     # SIGKILL: connections drop, nothing more is written
    server.start()                    # loads dump.rdb if a SAVE wrote one
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis.asyncio as redis

from tests.support.helpers import free_port, wait_until

# A throwaway server: nothing written to disk unless the test asks (SAVE).
REDIS_NO_DISK = ("--save", "", "--appendonly", "no")



class PrivateRedis:
    def __init__(self, directory: Path | None = None) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.skip("redis-server is not installed")
        args = [server, "--port", str(self.port), "--bind", "127.0.0.1", *REDIS_NO_DISK]
        if self.directory is not None:
            args += ["--dir", str(self.directory), "--dbfilename", "dump.rdb"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def ready(self, timeout: float = 10.0) -> None:
        client = redis.Redis.from_url(self.url)

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except redis.RedisError:
                return False

        try:
            await wait_until(answers, timeout=timeout)
        finally:
            await client.aclose()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
