"""The documentation is true.

The Sphinx site builds: docs/ (the API reference from the installed
package's docstrings, the Markdown pages, the examples) with any warning
failing the test, as a broken reference or docstring would.

README.md works on any machine: every `scardio ...` command it shows (in
shell code blocks and inline) exits 0 when run through a subprocess of the
installed scardio, and every Python code block runs.  A command added to
README is tested automatically, so it must work on simulated readers and
terminate by itself."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def sphinx_build(docs: Path, tmp_path: Path) -> "subprocess.CompletedProcess[str]":
    if not (DOCS / "conf.py").is_file():
        pytest.skip("needs the source tree (docs/ is not installed)")
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install '.[test]')")
    pytest.importorskip("myst_parser", reason="myst-parser is not installed (pip install '.[test]')")
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(docs), str(tmp_path / "html")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_sphinx_build_has_no_warnings(tmp_path: Path) -> None:
    proc = sphinx_build(DOCS, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    out = tmp_path / "html"
    api = (out / "api.html").read_text(encoding="utf-8")
    # autodoc really imported the package, the compiled binding included
    for anchor in ("scardio.reader.Reader.connect", "scardio.Device.ioctl",
                   "scardio.discovery.list_readers", "scardio.aio.AsyncReader"):
        assert f'id="{anchor}"' in api, f"{anchor} missing from the API reference"
    for page in ("architecture", "benchmarks", "reliability", "troubleshooting",
                 "examples", "changelog"):
        assert (out / f"{page}.html").is_file(), f"{page}.html was not built"


def test_sphinx_build_fails_on_a_broken_reference(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(DOCS, tree / "docs")  # with what docs/ includes from beside it
    shutil.copytree(DOCS.parent / "examples", tree / "examples")
    shutil.copy(DOCS.parent / "CHANGELOG.md", tree / "CHANGELOG.md")
    with open(tree / "docs" / "index.rst", "a", encoding="utf-8") as f:
        f.write("\nSee :func:`scardio.no_such_function`.\n")
    proc = sphinx_build(tree / "docs", tmp_path)
    assert proc.returncode != 0
    assert "scardio.no_such_function" in proc.stderr


# ---------------------------------------------------------------------------
# README.md

README = Path(__file__).resolve().parent.parent / "README.md"
SHELL_LANGS = {"", "sh", "shell", "bash", "console"}
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`(scardio(?: [^`]*)?)`")


def _blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def readme_commands(text: str) -> list[str]:
    """The scardio commands README shows, in order, without duplicates."""
    found: list[str] = []
    for lang, body in _blocks(text):
        if lang in SHELL_LANGS:
            for line in body.splitlines():
                found += [part.strip() for part in line.split("&&")
                          if part.strip().startswith("scardio ")]
    prose = FENCE.sub("", text)
    found += INLINE.findall(prose)
    return list(dict.fromkeys(found))


def readme_python(text: str) -> list[str]:
    return [body for lang, body in _blocks(text) if lang == "python"]


TEXT = README.read_text(encoding="utf-8") if README.is_file() else ""
COMMANDS = readme_commands(TEXT)
PYTHON = readme_python(TEXT)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SCARDIO_SIM"}


def test_readme_shows_commands_and_code() -> None:
    if not TEXT:
        pytest.skip("needs the source tree (README.md)")
    assert "scardio demo" in COMMANDS
    assert any("--sim 1" in c for c in COMMANDS), COMMANDS
    assert len(PYTHON) >= 2


def test_extraction() -> None:
    text = ("Try `scardio list` or `scardio.Monitor`.\n\n```\npip install . && scardio demo\n"
            "scardio --sim 1 info \"Simulated Reader 0\"\n```\n\n```python\nprint(1)\n```\n"
            "```console\nscardio list\n```\n")
    assert readme_commands(text) == ["scardio demo", 'scardio --sim 1 info "Simulated Reader 0"',
                                     "scardio list"]
    assert readme_python(text) == ["print(1)\n"]


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command(command: str, tmp_path: Path) -> None:
    argv = shlex.split(command)
    assert argv[0] == "scardio"
    proc = subprocess.run([sys.executable, "-m", "scardio", *argv[1:]], cwd=tmp_path,
                          env=_env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"{command!r} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), f"{command!r} printed nothing"


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_readme_python_block(index: int, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", PYTHON[index]], cwd=tmp_path, env=_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"README python block {index} failed:\n{proc.stderr}"
