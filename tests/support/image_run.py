"""How to run a built image's commands, by tool, for tests/support/image_trial.py.

- docker, and podman where `podman run` works: `run --network host --read-only --tmpfs /tmp` (the
  Kubernetes manifests' read-only root and scratch /tmp), the settings passed by name from this
  process's environment, never on a command line.
- podman where `podman run` is refused (a sandbox that forbids `setrlimit`, as on this project's
  CI machines): the image's files mounted read-only (`podman image mount`) and its commands run
  in them with `chroot --userspec=UID:GID`, with exactly the image's environment and working
  directory plus the settings. The image's own Python, files and user; no container namespaces
  and no /proc (the bot's own code reads none).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

CHECK_TIMEOUT = 120.0  # seconds, for one-shot commands in the image (a loaded 2-core machine)


class TrialFailed(Exception):
    """One line saying what the image did wrong."""


@dataclass(frozen=True)
class ImageConfig:
    user: str
    env: dict[str, str]
    workdir: str
    cmd: list[str]
    healthcheck: list[str]

    @classmethod
    async def of(cls, tool: str, image: str) -> ImageConfig:
        code, out = await output(tool, "image", "inspect", image)
        if code != 0:
            raise TrialFailed(f"{tool} cannot inspect {image}: {out.strip()}")
        return cls.inspected(json.loads(out)[0])

    @classmethod
    def inspected(cls, inspected: dict[str, Any]) -> ImageConfig:
        """From one image of `docker image inspect` or `podman image inspect`."""
        config: dict[str, Any] = inspected["Config"]
        # Docker keeps the HEALTHCHECK in Config; podman beside it.
        healthcheck = config.get("Healthcheck") or inspected.get("Healthcheck") or {}
        test = healthcheck.get("Test") or []
        return cls(
            user=config.get("User") or "",
            env=dict(item.split("=", 1) for item in config.get("Env") or []),
            workdir=config.get("WorkingDir") or "/",
            cmd=list(config.get("Cmd") or []),
            # ["CMD", argv...] runs argv; ["CMD-SHELL", line] runs it with /bin/sh -c.
            healthcheck=test[1:] if test[:1] == ["CMD"] else ["/bin/sh", "-c", *test[1:]],
        )

    def verify(self) -> str:
        if not re.fullmatch(r"\d+:\d+", self.user) or self.user.startswith("0:"):
            raise TrialFailed(f"the image's USER is {self.user!r}: it must be a numeric, non-root UID:GID")
        if not self.cmd:
            raise TrialFailed("the image has no CMD")
        if self.healthcheck == ["/bin/sh", "-c"]:
            raise TrialFailed("the image has no HEALTHCHECK (built as OCI? podman needs --format=docker)")
        return (f"runs as {self.user} in {self.workdir}, CMD {' '.join(self.cmd)}, "
                f"HEALTHCHECK {' '.join(self.healthcheck)}")


class Runner(Protocol):
    how: str

    async def start(self, argv: list[str], env: Mapping[str, str], log: Path | None = None
                    ) -> asyncio.subprocess.Process: ...

    async def terminate(self, process: asyncio.subprocess.Process) -> None: ...

    async def close(self) -> None: ...


class ContainerRunner:
    """`docker run` / `podman run`, one container per command, removed when it ends."""

    def __init__(self, tool: str, image: str) -> None:
        self.tool, self.image = tool, image
        self.how = f"{tool} run --network host --read-only --tmpfs /tmp"
        self._names: dict[int, str] = {}

    async def start(self, argv: list[str], env: Mapping[str, str], log: Path | None = None
                    ) -> asyncio.subprocess.Process:
        name = f"chatbot-trial-{secrets.token_hex(4)}"
        by_name = [arg for key in env for arg in ("-e", key)]  # values from the environment below
        process = await spawn(
            [self.tool, "run", "--rm", "--name", name, "--network", "host", "--read-only",
             "--tmpfs", "/tmp", *by_name, self.image, *argv],
            os.environ | dict(env), log,
        )
        self._names[process.pid] = name
        return process

    async def terminate(self, process: asyncio.subprocess.Process) -> None:
        await output(self.tool, "kill", "--signal", "TERM", self._names[process.pid])

    async def close(self) -> None:
        for name in self._names.values():  # containers left by a failed trial
            await output(self.tool, "rm", "--force", name)


class ChrootRunner:
    """The image's files, mounted read-only, as the root of `chroot --userspec` (see the docstring)."""

    def __init__(self, image: str, root: str, config: ImageConfig) -> None:
        self.image, self.root, self.config = image, root, config
        self.how = f"podman image mount + chroot --userspec={config.user} (read-only root)"

    @classmethod
    async def mount(cls, image: str, config: ImageConfig) -> ChrootRunner:
        code, out = await output("podman", "image", "mount", image)
        if code != 0:
            raise TrialFailed(f"podman image mount {image} failed: {out.strip()}")
        return cls(image, out.strip(), config)

    async def start(self, argv: list[str], env: Mapping[str, str], log: Path | None = None
                    ) -> asyncio.subprocess.Process:
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        # chroot keeps the environment it is given: the image's own, and the settings.
        return await spawn(
            [chroot, f"--userspec={self.config.user}", self.root, "/usr/bin/env", "-C", self.config.workdir,
             *argv],
            self.config.env | dict(env), log,
        )

    async def terminate(self, process: asyncio.subprocess.Process) -> None:
        process.send_signal(signal.SIGTERM)  # chroot and env exec: this is the image's Python

    async def close(self) -> None:
        await output("podman", "image", "unmount", self.image)


async def spawn(argv: list[str], env: Mapping[str, str], log: Path | None) -> asyncio.subprocess.Process:
    """ARGV with its output to `log` (a long-running server), or to a pipe (one-shot commands)."""
    out = log.open("wb") if log else asyncio.subprocess.PIPE
    try:
        return await asyncio.create_subprocess_exec(
            *argv, env=dict(env), stdin=asyncio.subprocess.DEVNULL, stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


async def output(*argv: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


async def once(runner: Runner, argv: list[str], env: Mapping[str, str]) -> tuple[int, str]:
    process = await runner.start(argv, env)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), CHECK_TIMEOUT)
    except TimeoutError:
        process.kill()
        command = " ".join(argv)
        raise TrialFailed(f"`{command}` in the image did not end within {CHECK_TIMEOUT:.0f} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


async def pick_runner(tool: str, image: str, config: ImageConfig) -> Runner:
    if tool == "docker":
        return ContainerRunner(tool, image)
    probe = ContainerRunner(tool, image)
    code, out = await once(probe, ["python", "-c", "pass"], {})
    await probe.close()
    if code == 0:
        return probe
    refusal = out.strip().splitlines()[-1] if out.strip() else f"status {code}"
    print(f"note podman run is refused here ({refusal}): running the image's files with chroot instead")
    return await ChrootRunner.mount(image, config)
