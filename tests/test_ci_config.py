"""The CI configuration, checked where it cannot be run: the cibuildwheel
test command means the same to cmd.exe (Windows) as to sh, the workflow asks
for GitHub runner images that still exist, one native runner per
architecture; .ci/run runs README's test command word for word, then the
quick benchmark set with pytest-benchmark enabled, keeping its JSON in a
git-ignored artifacts directory it names."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
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


# ---- .ci/run: the README test command, then the quick benchmark set ----------

CI_RUN = ROOT / ".ci" / "run"
BENCH = ROOT / "benchmarks"


def ci_commands() -> list[str]:
    """.ci/run's command lines (comments, blank lines and continuations folded)."""
    text = CI_RUN.read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"^(python -m pytest[^\n]*)$", text, re.M)
    assert len(found) == 1, found
    return str(found[0])


def load_bench_runner() -> Any:
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_runs_the_readme_test_command_then_the_quick_benchmarks() -> None:
    commands = ci_commands()
    assert readme_test_command() in commands, commands
    tests_at = commands.index(readme_test_command())
    bench = [i for i, c in enumerate(commands) if "benchmarks/run.py" in c]
    assert len(bench) == 1, commands
    assert bench[0] > tests_at, "the benchmarks run after the test command"
    argv = shlex.split(commands[bench[0]])
    assert argv[:2] == ["python", "benchmarks/run.py"], argv
    assert "--quick" in argv and "--rerun-failures" in argv, argv
    assert argv[argv.index("--out") + 1] == ".ci/artifacts", argv
    # ... and says where the artifact is.
    assert any(c.startswith("echo") and ".ci/artifacts/benchmarks.json" in c
               for c in commands[bench[0]:]), commands


def test_ci_benchmark_artifacts_are_git_ignored() -> None:
    ignored = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()]
    assert ".ci/artifacts/" in ignored, ignored


def test_the_quick_run_enables_pytest_benchmark_and_writes_the_artifact_json() -> None:
    run = load_bench_runner()
    argv = run.pytest_argv(True, "OUT")
    assert argv[1:3] == ["-m", "pytest"], argv
    assert "--benchmark-enable" in argv, "pyproject's addopts disable pytest-benchmark"
    assert f"--benchmark-json={os.path.join('OUT', 'benchmarks.json')}" in argv, argv
    assert argv[argv.index("-m", 3) + 1] == "quick", argv
    budget = [a for a in argv if a.startswith("--benchmark-max-time=")]
    assert budget and float(budget[0].split("=", 1)[1]) <= 0.5, argv
    assert run.results_path(True, "OUT") == os.path.join("OUT", "results.json")


def collect(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_quick_set_is_the_guard_and_one_operation_per_benchmark_file() -> None:
    r = collect(str(BENCH), "-m", "quick", "--collect-only", "-q")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    guard = collect(str(BENCH / "test_guard.py"), "--collect-only", "-q")
    guard_ids = [line for line in guard.stdout.splitlines() if "::" in line]
    assert guard_ids and set(guard_ids) <= set(ids), (guard_ids, ids)
    for module, bench in (("test_bench_sim.py", "test_sim_benchmark"),
                          ("test_bench_vpcd.py", "test_vpcd_benchmark"),
                          ("test_bench_aio.py", "test_aio_benchmark")):
        mine = [i for i in ids if f"{module}::" in i]
        assert any(f"::{bench}[" in i for i in mine), (module, ids)
        everything = collect(str(BENCH / module), "--collect-only", "-q")
        total = [line for line in everything.stdout.splitlines() if "::" in line]
        assert len(mine) <= len(total) // 3, (module, mine)  # a subset, not the file


def test_pytest_benchmark_output_without_enabling_it_is_a_usage_error(tmp_path: Path) -> None:
    unused = tmp_path / "unused.json"
    r = collect(str(BENCH / "test_guard.py"), "--collect-only", "-q",
                f"--benchmark-json={unused}")
    assert r.returncode == 4, r.stdout[-2000:] + r.stderr[-2000:]
    assert "--benchmark-json needs --benchmark-enable" in r.stderr, r.stderr[-2000:]
    assert not unused.exists()
