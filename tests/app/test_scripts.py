"""scripts/_venv.sh: finds Python 3.11+, rebuilds a .venv made with an older one, installs from
the lock once, and refuses a pyproject.toml the lock does not match.

Run on a tiny project of its own: no dependencies, and a build backend in the project itself,
so an install takes seconds and never reaches a package index (uv runs offline). The uv is the
one that installed this suite (tests/app/test_lock.py finds it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.app.test_cli import ROOT
from tests.app.test_lock import run_uv, uv

# The bot under test runs in a process of its own, on the wall clock (tests/support/clock.py).
pytestmark = pytest.mark.real_time

TINY = """[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "tiny"
version = "0"

"""

# PEP 517's least: a wheel of metadata only, also for an editable install.
BACKEND = '''import zipfile
from pathlib import Path

INFO = "tiny-0.dist-info"
FILES = {
    f"{INFO}/METADATA": "Metadata-Version: 2.1\\nName: tiny\\nVersion: 0\\n",
    f"{INFO}/WHEEL": "Wheel-Version: 1.0\\nGenerator: tiny\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    f"{INFO}/RECORD": "",
}


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "tiny-0-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / name, "w") as wheel:
        for path, text in FILES.items():
            wheel.writestr(path, text)
    return name


build_editable = build_wheel
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    for name in ("_venv.sh", "uv-requirements.txt"):
        shutil.copy(ROOT / "scripts" / name, tmp_path / "scripts" / name)
    (tmp_path / "pyproject.toml").write_text(TINY)
    (tmp_path / "backend.py").write_text(BACKEND)
    locked = run_uv("lock", cwd=tmp_path)
    assert locked.returncode == 0, locked.stderr
    return tmp_path


async def venv_sh(project: Path, **env: str) -> tuple[int, str]:
    """`source scripts/_venv.sh` as scripts/bot does, then print the venv's Python version."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VENV", "VIRTUAL_ENV")}
    script = 'set -euo pipefail; source scripts/_venv.sh; "$VENV/bin/python" -V'
    process = await asyncio.create_subprocess_exec(
        shutil.which("bash") or "/bin/bash", "-c", script,
        cwd=project, env=clean | {"UV": uv(), "UV_OFFLINE": "1"} | env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode is not None
    return process.returncode, out.decode()


def old_python(path: Path) -> Path:
    """A stand-in for a Python 3.10 (a .venv's interpreter, or one on PATH)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\nif [ "$1" = "-V" ]; then echo "Python 3.10.13"; exit 0; fi\nexit 1\n')
    path.chmod(0o755)
    return path


@pytest.mark.long
@pytest.mark.timeout(300)
async def test_a_venv_of_an_older_python_is_rebuilt_and_installed_once(project: Path) -> None:
    venv = project / ".venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("version = 3.10.13\n")
    old_python(venv / "bin" / "python")

    code, out = await venv_sh(project)
    assert code == 0, out
    assert ".venv does not run Python 3.11+ (Python 3.10.13): rebuilding it with" in out
    assert "installing from uv.lock into .venv" in out
    version = out.strip().splitlines()[-1]
    assert version.startswith("Python 3.") and int(version.split(".")[1]) >= 11
    assert (venv / "lib").exists() and list(venv.glob("lib/python3.*/site-packages/tiny-0.dist-info"))

    # Again: nothing to install.
    code, out = await venv_sh(project)
    assert code == 0 and "installing" not in out and "rebuilding" not in out, out


async def test_a_pyproject_the_lock_does_not_match_stops_the_install(project: Path) -> None:
    code, out = await venv_sh(project)
    assert code == 0, out
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0"', 'version = "1"'))
    code, out = await venv_sh(project)
    assert code == 1
    assert out.strip().splitlines()[-1] == (
        "error: pyproject.toml and uv.lock disagree: run ./scripts/upgrade (or "
        f"{uv()} lock) and commit uv.lock"
    )


async def test_no_suitable_python_is_one_clear_message(project: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    old_python(bin_dir / "python3")
    code, out = await venv_sh(project, PATH=str(bin_dir))
    assert code == 1
    assert "error: no Python 3.11 or newer found" in out and "PYTHON=" in out

    code, out = await venv_sh(project, PYTHON=str(bin_dir / "python3"))
    assert code == 1
    assert f"PYTHON={bin_dir / 'python3'} is Python 3.10.13; this project needs Python 3.11 or newer" in out
    assert not (project / ".venv").exists()


def test_upgrade_relocks_exports_tests_and_leaves_the_diff(project: Path) -> None:
    """`scripts/upgrade --lock-only` after an edit of pyproject.toml: a new uv.lock, the image's
    export of it, the test command run, and the diff shown (nothing committed)."""
    shutil.copy(ROOT / "scripts" / "upgrade", project / "scripts" / "upgrade")
    (project / "scripts" / "test").write_text("#!/usr/bin/env bash\necho the-suite-ran\n")
    (project / "scripts" / "test").chmod(0o755)
    (project / "deploy").mkdir()
    who = ["-c", "user.name=t", "-c", "user.email=t@t"]
    for git in (["init", "-q"], ["add", "-A"], [*who, "commit", "-qm", "0"]):
        subprocess.run(["git", *git], cwd=project, check=True, capture_output=True)
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0"', 'version = "1"'))

    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VENV", "VIRTUAL_ENV")}
    upgraded = subprocess.run(
        [project / "scripts" / "upgrade", "--lock-only"], cwd=project,
        env=clean | {"UV": uv(), "UV_OFFLINE": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )
    out = upgraded.stdout
    assert upgraded.returncode == 0, out
    assert 'version = "1"' in (project / "uv.lock").read_text()
    assert (project / "deploy" / "requirements.lock").read_text().startswith(
        "# This file was autogenerated by uv via the following command:"
    )
    assert "the-suite-ran" in out
    assert "uv.lock" in out.split("== what changed", 1)[1]  # the diff to review
