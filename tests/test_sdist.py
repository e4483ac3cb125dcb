"""The sdist, as a user gets it: `python -m build` on a clean copy of the
tree (sdist, then the wheel from the sdist, each in an isolated build
environment), with no warnings; the sdist carries every source the build
needs on every platform and no generated C; `pip install scardio-X.tar.gz`
in a fresh venv gives a working `scardio demo`.

The isolated builds download the build requirements, so these tests skip
when the package index cannot be reached (the probe is tested below)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from build_support import (ROOT, build_env, build_index_problem, clean_copy, fresh_venv,
                           index_problem, tracked_files, venv_bin, warnings_in)
from core_sources import core_source_files

# Tracked files that are not part of a source release.
NOT_IN_SDIST = (".gitignore", ".github/", ".ci/")
# What setuptools adds to every sdist.
SDIST_METADATA = ("PKG-INFO", "setup.cfg", "src/scardio.egg-info/")
# Sources setup.py compiles on some platform (native/win32 only on Windows),
# besides the binding's (core_source_files: _core.pyx and its includes).
BUILD_SOURCES = ("src/scardio/_scio.pxd", "native/scio.h",
                 "native/core/backend.h", "native/ifd/ifd_abi.h", "native/sim/card.h",
                 "native/win32/scio_win32.c", "native/win32/scio_win32_discover.h",
                 "native/posix/paths.c")


@dataclass
class Built:
    sdist: Path
    wheel: Path
    output: str
    seconds: float


def needs_index() -> None:
    if subprocess.run([sys.executable, "-c", "import build"]).returncode:
        pytest.skip("build is not installed (pip install '.[test]')")
    problem = build_index_problem()
    if problem:
        pytest.skip(f"{problem}; isolated builds download setuptools and Cython")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    if not (ROOT / "setup.py").exists():
        pytest.skip("needs the source tree")
    needs_index()
    tmp = tmp_path_factory.mktemp("sdist")
    src = clean_copy(tmp / "src")
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "build", "-o", str(tmp / "dist"), str(src)],
                          capture_output=True, text=True, timeout=900, env=build_env())
    took = time.monotonic() - t
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    (sdist,) = (tmp / "dist").glob("*.tar.gz")
    (wheel,) = (tmp / "dist").glob("*.whl")
    print(f"\nsdist {sdist.name}: {sdist.stat().st_size / 1024:.0f} KiB; "
          f"python -m build (sdist + wheel): {took:.1f} s")
    return Built(sdist, wheel, output, took)


def sdist_members(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    top = sdist.name[:-len(".tar.gz")] + "/"
    assert all(n.startswith(top) for n in names), names
    return sorted(n[len(top):] for n in names)


def test_sdist_holds_every_source_and_no_generated_c(built: Built) -> None:
    members = sdist_members(built.sdist)
    binding = [p.relative_to(ROOT).as_posix() for p in core_source_files()]
    for name in [*binding, *BUILD_SOURCES]:
        assert name in members, f"{name} is missing from the sdist"
    assert "src/scardio/_core.c" not in members
    assert not [m for m in members if m.endswith((".so", ".pyd", ".dll", ".o", ".pyc"))]
    tracked = tracked_files()
    if tracked is None:
        pytest.skip("the full file list needs a git checkout")
    released = {n for n in tracked if not n.startswith(NOT_IN_SDIST)}
    shipped = {m for m in members if not m.startswith(SDIST_METADATA)}
    missing, extra = sorted(released - shipped), sorted(shipped - released)
    assert not missing, f"tracked files missing from the sdist (add them to MANIFEST.in): {missing}"
    # Anything else is a build product (e.g. generated C): never shipped.
    assert not extra, f"untracked files in the sdist: {extra}"


def test_wheel_from_the_sdist_ships_no_sources(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as whl:
        names = whl.namelist()
    assert any(n.startswith("scardio/_core.") and n.endswith((".so", ".pyd")) for n in names)
    assert any(n.startswith("scardio/libscardio_sim.") for n in names), names
    assert "scardio/py.typed" in names and "scardio/_core.pyi" in names
    assert not [n for n in names if n.endswith((".c", ".pyx", ".pxi"))], names


def test_build_prints_no_warnings(built: Built) -> None:
    assert "Successfully built" in built.output
    assert not warnings_in(built.output), "\n".join(warnings_in(built.output))


def test_sdist_installs_in_a_fresh_venv_and_runs_the_demo(built: Built, tmp_path: Path) -> None:
    py = fresh_venv(tmp_path / "venv")
    t = time.monotonic()
    # An ordinary install: pip builds the wheel from the sdist in isolation.
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", str(built.sdist)],
                          capture_output=True, text=True, timeout=900, env=build_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(f"\npip install {built.sdist.name}: {time.monotonic() - t:.1f} s")
    scardio = venv_bin(tmp_path / "venv", "scardio")
    proc = subprocess.run([str(scardio), "demo", "--delay", "0.05"], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path, env=build_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "monitor: card departure" in proc.stdout, proc.stdout
    # The package came from the venv, not from this source tree.
    proc = subprocess.run([str(py), "-c", "import scardio; print(scardio.__file__)"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert Path(proc.stdout.strip()).resolve().is_relative_to((tmp_path / "venv").resolve()), \
        proc.stdout


# ---- the reachability probe behind the skips ----------------------------------------------

def isolated_pip_env(**settings: str) -> dict[str, str]:
    """The environment with pip's configuration files and PIP_* settings
    replaced by `settings`."""
    env = {k: v for k, v in build_env().items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull   # pip reads no configuration file then
    env.update(settings)
    return env


def test_index_probe_reports_an_unreachable_index(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:   # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = isolated_pip_env(PIP_INDEX_URL=f"http://127.0.0.1:{port}/simple")
    t = time.monotonic()
    problem = index_problem(["setuptools>=77"], env=env)
    assert problem is not None and "unreachable" in problem, problem
    assert time.monotonic() - t < 60


def test_index_probe_accepts_a_reachable_index(tmp_path: Path) -> None:
    # A local index (a find-links directory) holding one minimal wheel.
    links = tmp_path / "links"
    links.mkdir()
    info = "probe_dummy-1.0.dist-info"
    with zipfile.ZipFile(links / "probe_dummy-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: probe-dummy\nVersion: 1.0\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                      "Root-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    env = isolated_pip_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(links))
    assert index_problem(["probe-dummy>=1"], env=env) is None
    assert index_problem(["probe-dummy>=2"], env=env) is not None
