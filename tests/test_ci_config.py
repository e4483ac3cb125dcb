"""The wheel CI's configuration, checked where it cannot be run: the
cibuildwheel test command means the same to cmd.exe (Windows) as to sh,
and the workflow asks for GitHub runner images that still exist, one
native runner per architecture."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "wheels.yml"

# GitHub-hosted images retired by late 2026 (runner-images announcements):
# macOS 13 in Dec 2025, macOS 14 in Nov 2026, Windows Server 2019 in Jun 2025,
# Ubuntu 20.04 in Apr 2025; older ones before.
RETIRED = {"macos-11", "macos-12", "macos-13", "macos-13-large", "macos-13-xlarge",
           "macos-14", "macos-14-large", "macos-14-xlarge", "windows-2016", "windows-2019",
           "ubuntu-18.04", "ubuntu-20.04"}


def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is new in Python 3.11")
    with open(ROOT / "pyproject.toml", "rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    return data


def cmd_exe_argv(command: str) -> list[str]:
    """How a Windows program's C runtime splits a command line that cmd.exe
    passes on: whitespace separates, double quotes group, single quotes are
    ordinary characters (no backslashes occur in the commands checked)."""
    assert "\\" not in command
    argv, word, quoted, started = [], "", False, False
    for ch in command:
        if ch == '"':
            quoted, started = not quoted, True
        elif ch in " \t" and not quoted:
            if started:
                argv.append(word)
            word, started = "", False
        else:
            word, started = word + ch, True
    if started:
        argv.append(word)
    return argv


def test_the_cmd_exe_model_keeps_single_quotes() -> None:
    # The failure this guards against: -m 'not a and b' is 4 arguments there.
    assert cmd_exe_argv("pytest -m 'not a and b'") == ["pytest", "-m", "'not", "a", "and", "b'"]
    assert cmd_exe_argv('pytest -m "not a and b"') == ["pytest", "-m", "not a and b"]


def test_cibuildwheel_test_command_means_the_same_on_windows() -> None:
    config = pyproject()
    cibw = config["tool"]["cibuildwheel"]
    declared = {m.split(":")[0].strip() for m in config["tool"]["pytest"]["ini_options"]["markers"]}
    commands = [cibw["test-command"]]
    windows = cibw.get("windows", {})
    if "test-command" in windows:
        commands = [windows["test-command"]]   # what Windows runs
    for command in commands:
        assert "'" not in command, command
        argv = cmd_exe_argv(command)
        assert argv == shlex.split(command), (argv, shlex.split(command))
        assert argv[:3] == ["python", "-m", "pytest"], argv
        expr = argv[argv.index("-m", 3) + 1]
        names = set(re.findall(r"\w+", expr)) - {"not", "and", "or"}
        assert names and names <= declared, (names, declared)


def runner_labels() -> set[str]:
    text = WORKFLOW.read_text()
    return set(re.findall(r"\b(?:ubuntu|macos|windows)-[0-9a-z.]+(?:-[0-9a-z]+)*\b", text))


def test_workflow_uses_no_retired_runner_image() -> None:
    labels = runner_labels()
    assert labels, "no runner labels found in wheels.yml"
    assert not labels & RETIRED, sorted(labels & RETIRED)


def test_every_architecture_builds_on_a_native_runner() -> None:
    cibw = pyproject()["tool"]["cibuildwheel"]
    labels = runner_labels()
    # Native builds are tested where they are built; anything else needs QEMU.
    assert cibw.get("archs") == ["native"] or "setup-qemu-action" in WORKFLOW.read_text()
    for platform_keys in ("linux", "macos", "windows"):
        assert "archs" not in cibw.get(platform_keys, {}), platform_keys
    want = {
        "Linux x86_64": lambda s: s.startswith("ubuntu-") and not s.endswith("-arm"),
        "Linux aarch64": lambda s: s.startswith("ubuntu-") and s.endswith("-arm"),
        "macOS x86_64": lambda s: s.startswith("macos-") and s.endswith("-intel"),
        "macOS arm64": lambda s: re.fullmatch(r"macos-\d+", s) is not None,
        "Windows AMD64": lambda s: re.fullmatch(r"windows-(\d+|latest)", s) is not None,
        "Windows ARM64": lambda s: s.startswith("windows-") and s.endswith("-arm"),
    }
    missing = [arch for arch, is_runner in want.items() if not any(map(is_runner, labels))]
    assert not missing, (missing, sorted(labels))
