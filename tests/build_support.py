"""Helpers for the tests that build scardio as a user does: a clean copy of
the source tree, the build requirements, whether the package index can be
reached (isolated builds download them), and a fresh venv."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent

# Lines that count as a warning in build output (setuptools, distutils,
# Cython and the compiler all spell it this way).
WARNING = re.compile(r"warning", re.IGNORECASE)


def build_requirements() -> list[str]:
    """[build-system] requires of pyproject.toml (no tomllib on 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    m = re.search(r"^\[build-system\][^\[]*?^requires\s*=\s*\[(.*?)\]", text, re.M | re.S)
    assert m, "pyproject.toml has no [build-system] requires"
    return re.findall(r'"([^"]+)"', m.group(1))


def unmet_build_requirements() -> list[str]:
    """The build requirements this interpreter does not satisfy (what a
    `python -m build --no-isolation` would miss)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement
    unmet = []
    for line in build_requirements():
        req = Requirement(line)
        try:
            if req.specifier.contains(version(req.name), prereleases=True):
                continue
        except PackageNotFoundError:
            pass
        unmet.append(line)
    return unmet


def index_problem(requirements: list[str], env: Optional[dict[str, str]] = None,
                  timeout: float = 120) -> Optional[str]:
    """None when pip, configured as for an isolated build, can fetch
    `requirements`; otherwise why it cannot (the index is unreachable)."""
    with tempfile.TemporaryDirectory() as dest:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--timeout", "10", "--retries", "1", "-q", "-d", dest, *requirements]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return f"the package index did not answer within {timeout:.0f} s"
    if proc.returncode == 0:
        return None
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return (f"the package index is unreachable: `pip download {' '.join(requirements)}` "
            f"failed ({lines[-1].strip() if lines else f'exit {proc.returncode}'})")


@functools.lru_cache(maxsize=None)
def build_index_problem() -> Optional[str]:
    """Why an isolated build cannot get scardio's build requirements, or None."""
    return index_problem(build_requirements())


def tracked_files() -> Optional[list[str]]:
    """Files a commit of the working tree would hold (tracked and not-ignored
    new files, as they are now), or None outside a git checkout."""
    try:
        proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard"], cwd=ROOT, capture_output=True,
                              timeout=60)
    except OSError:
        return None
    if proc.returncode:
        return None
    names = [n for n in proc.stdout.decode().split("\0") if n]
    return sorted(n for n in names if (ROOT / n).is_file())


def clean_copy(dest: Path) -> Path:
    """The source tree at `dest` without build products: the git file list
    where there is one, else the tree less the usual products."""
    names = tracked_files()
    if names is None:
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".git", ".venv", "venv", "build", "dist", "*.so", "*.pyd", "*.dll", "_core.c",
            ".hypothesis", ".benchmarks", ".pytest_cache", "__pycache__", "*.egg-info"))
        return dest
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return dest


def build_env() -> dict[str, str]:
    """The environment of a user's build: bytecode writing on (distutils
    warns when it is off), nothing of this test run's import path."""
    env = dict(os.environ)
    for var in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH"):
        env.pop(var, None)
    return env


def fresh_venv(env_dir: Path) -> Path:
    """A new venv with pip; its interpreter."""
    venv.EnvBuilder(with_pip=True).create(env_dir)
    return venv_bin(env_dir, "python")


def venv_bin(env_dir: Path, name: str) -> Path:
    sub = "Scripts" if sys.platform == "win32" else "bin"
    return env_dir / sub / (name + (".exe" if sys.platform == "win32" else ""))


def warnings_in(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if WARNING.search(ln)]
