"""The documentation builds: Sphinx renders docs/ (the API reference from the
installed package's docstrings, the Markdown pages, the examples) and any
warning fails the test, as a broken reference or docstring would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_sphinx_build_has_no_warnings(tmp_path: Path) -> None:
    if not (DOCS / "conf.py").is_file():
        pytest.skip("needs the source tree (docs/ is not installed)")
    pytest.importorskip("sphinx", reason="sphinx is not installed (pip install '.[test]')")
    pytest.importorskip("myst_parser", reason="myst-parser is not installed (pip install '.[test]')")
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    api = (out / "api.html").read_text(encoding="utf-8")
    # autodoc really imported the package, the compiled binding included
    for anchor in ("scardio.reader.Reader.connect", "scardio.Device.ioctl",
                   "scardio.discovery.list_readers", "scardio.aio.AsyncReader"):
        assert f'id="{anchor}"' in api, f"{anchor} missing from the API reference"
    for page in ("architecture", "benchmarks", "reliability", "troubleshooting",
                 "examples", "changelog"):
        assert (out / f"{page}.html").is_file(), f"{page}.html was not built"
