"""The container image is built and tried: `scripts/image` builds deploy/Dockerfile (docker where
a daemon answers, podman otherwise, installed if need be) and `tests/support/image_trial.py` runs the
image's own `check` and `run` against the real Redis and the fakes, as its unprivileged user.
Skipped, with the script's one-line reason, only where neither tool can be had (exit 77)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from tests.support.image_run import ImageConfig, TrialFailed
from tests.support.image_trial import LOCK, ROOT, locked

SKIP = 77  # scripts/image: neither docker with a daemon nor podman can be had here

# What a Python 3.11.2 on x86-64 Linux (Debian bookworm's) says to PEP 508 markers.
BOOKWORM = {
    "implementation_name": "cpython", "os_name": "posix", "platform_machine": "x86_64",
    "platform_python_implementation": "CPython", "platform_release": "", "platform_system": "Linux",
    "platform_version": "", "python_full_version": "3.11.2", "python_version": "3.11",
    "sys_platform": "linux",
}


@pytest.mark.long
@pytest.mark.real_time  # the image's bot runs in processes of its own, on the wall clock
@pytest.mark.timeout(1800)  # a cold run installs podman, makes the base and builds: about 2 min here
def test_the_image_builds_checks_serves_and_stops() -> None:
    platform_settings = ("SLACK_", "DISCORD_", "TOGETHER_", "REDIS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(platform_settings)}
    env["VENV"] = sys.prefix  # the trial's fakes run in this virtualenv
    result = subprocess.run(
        [str(ROOT / "scripts" / "image")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1750
    )
    if result.returncode == SKIP:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    for step in (
        "ok   image localhost/chatbot:local: runs as 10001:10001",
        "ok   the image holds exactly the",  # deploy/requirements.lock's packages, no other
        "     | ok   redis: reachable at redis://127.0.0.1:6379/0",  # the image's own check says
        "ok   python -m bot check: every check passed",
        "ok   python -m bot run: /healthz answered 200",
        "ok   /readyz answered 200",
        "ok   the image's HEALTHCHECK passed",
        "ok   a signed DM event was answered in the fake Slack",
        'ok   /metrics counts it: chatbot_answers_total{outcome="ok",platform="slack"} 1.0',
        "ok   SIGTERM: `run` stopped with status 0",
    ):
        assert step in out, out


def test_the_lock_check_applies_each_requirements_marker_for_the_images_python() -> None:
    text = "\n".join([
        "# via uv export",
        "redis==8.2.0 \\",
        "    --hash=sha256:00",
        "async-timeout==5.0.1 ; python_full_version < '3.11.3' \\",
        "    --hash=sha256:11",
        "audioop-lts==0.2.2 ; python_full_version >= '3.13'",
        "Discord.py==2.7.1",
    ])
    assert locked(text, BOOKWORM) == {"redis": "8.2.0", "async-timeout": "5.0.1", "discord-py": "2.7.1"}
    newer = BOOKWORM | {"python_full_version": "3.13.1", "python_version": "3.13"}
    assert locked(text, newer) == {"redis": "8.2.0", "audioop-lts": "0.2.2", "discord-py": "2.7.1"}


def test_the_real_lock_pins_every_runtime_dependency_it_names() -> None:
    pins = locked(LOCK.read_text(), BOOKWORM)
    assert {"slack-bolt", "discord-py", "redis", "aiohttp"} <= set(pins)
    assert all(version and version[0].isdigit() for version in pins.values()), pins


def inspected(**config: Any) -> dict[str, Any]:
    """What `docker image inspect` says of an image like deploy/Dockerfile's, changed by `config`."""
    return {"Config": {
        "User": "10001:10001", "WorkingDir": "/app", "Cmd": ["python", "-m", "bot", "run"],
        "Env": ["PATH=/opt/venv/bin:/usr/bin:/bin", "PYTHONUNBUFFERED=1"],
        "Healthcheck": {"Test": ["CMD", "python", "-m", "bot.ops.health"], "Interval": 30000000000},
    } | config}


def test_the_image_config_reads_docker_and_podman_alike() -> None:
    docker = ImageConfig.inspected(inspected())
    assert docker.env == {"PATH": "/opt/venv/bin:/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    assert docker.healthcheck == ["python", "-m", "bot.ops.health"]
    assert "runs as 10001:10001 in /app, CMD python -m bot run" in docker.verify()
    podman = inspected()  # podman keeps the HEALTHCHECK beside Config
    podman["Healthcheck"] = podman["Config"].pop("Healthcheck")
    assert ImageConfig.inspected(podman) == docker
    shell = ImageConfig.inspected(inspected(Healthcheck={"Test": ["CMD-SHELL", "curl -f localhost"]}))
    assert shell.healthcheck == ["/bin/sh", "-c", "curl -f localhost"]


@pytest.mark.parametrize("user", ["", "0:0", "0", "bot", "bot:bot", "10001"])
def test_an_image_whose_user_is_root_or_not_numeric_fails(user: str) -> None:
    with pytest.raises(TrialFailed, match="numeric, non-root UID:GID"):
        ImageConfig.inspected(inspected(User=user)).verify()


def test_an_image_without_healthcheck_or_cmd_fails() -> None:
    with pytest.raises(TrialFailed, match="no HEALTHCHECK"):
        ImageConfig.inspected(inspected(Healthcheck=None)).verify()
    with pytest.raises(TrialFailed, match="no HEALTHCHECK"):
        ImageConfig.inspected(inspected(Healthcheck={"Test": ["NONE"]})).verify()
    with pytest.raises(TrialFailed, match="no CMD"):
        ImageConfig.inspected(inspected(Cmd=None)).verify()
