"""Builds for platforms this machine cannot run, checked from Linux.

- Every C source that setup.py builds on Windows, compiled by clang in MSVC
  mode (the dialect MSVC accepts: no VLAs, LLP64 ``long``), with mingw-w64's
  headers standing in for the Windows SDK and 64-to-32-bit conversions as
  errors.
- The Cython-generated binding, cross-compiled with mingw-w64 against the
  running interpreter's headers plus a win-amd64 ``pyconfig.h``
  (tests/cross/pyconfig.h), linked with the C core into a ``.pyd`` that must
  import from pythonXY.dll and export ``PyInit__core`` alone.
- The IFD-handler driver types of native/ifd/ifd_abi.h on Linux, macOS and
  Windows targets (clang ``--target=... -fsyntax-only``).

The C tests compiled for the macOS code paths run in test_native.py.  Each
test here skips, naming what is missing, when its tools are not installed;
.ci/run installs them all.  The source lists, include directories, macros and
Cython options are read from setup.py, never repeated here.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from core_sources import CORE_PYX, core_includes

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "setup.py"
CROSS = Path(__file__).resolve().parent / "cross"
PRELUDE = CROSS / "msvc_prelude.h"
MINGW = "x86_64-w64-mingw32-"

pytestmark = pytest.mark.cross

MSVC_FLAGS = [
    "--target=x86_64-pc-windows-msvc", "-fms-compatibility", "-fms-extensions",
    "-std=c11", "-fsyntax-only",
    "-Wall", "-Wextra", "-Wconversion", "-Wshorten-64-to-32", "-Wvla", "-Werror",
]


# ---- setup.py, read rather than repeated --------------------------------------

def _windows_build() -> dict[str, Any]:
    """setup.py's extensions as configured on Windows: for each extension
    name its keyword arguments, plus the cythonize options."""
    if not SETUP.exists():
        pytest.skip("needs the source tree (setup.py)")
    tree = ast.parse(SETUP.read_text(encoding="utf-8"), str(SETUP))
    ns: dict[str, Any] = {"IS_WINDOWS": True}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            try:
                ns[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # not a constant
        elif (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
              and node.test.id == "IS_WINDOWS"):
            # The platform branch assigns the Windows source and flag lists.
            exec(compile(ast.Module(body=node.body, type_ignores=[]), str(SETUP), "exec"), ns)

    def value(expr: ast.expr) -> Any:
        return eval(compile(ast.Expression(expr), str(SETUP), "eval"), dict(ns))

    extensions: dict[str, dict[str, Any]] = {}
    cythonize_options: dict[str, Any] = {}
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            continue
        if call.func.id == "Extension":
            kwargs = {k.arg: value(k.value) for k in call.keywords if k.arg}
            name = value(call.args[0])
            if len(call.args) > 1:
                kwargs["sources"] = value(call.args[1])
            extensions[name] = kwargs
        elif call.func.id == "cythonize":
            cythonize_options = {k.arg: value(k.value) for k in call.keywords if k.arg}
    assert "scardio._core" in extensions, "setup.py defines no scardio._core extension"
    return {"extensions": extensions, "cythonize": cythonize_options}


def _c_sources(ext: dict[str, Any]) -> list[str]:
    return [s for s in ext["sources"] if s.endswith(".c")]


def _macro_flags(ext: dict[str, Any]) -> list[str]:
    flags = []
    for name, val in ext.get("define_macros") or []:
        flags.append(f"-D{name}" if val is None else f"-D{name}={val}")
    flags += [f"-U{name}" for name in ext.get("undef_macros") or []]
    return flags


def _include_flags(ext: dict[str, Any]) -> list[str]:
    return [f"-I{ROOT / d}" for d in ext.get("include_dirs") or []]


def _windows_sources() -> list[tuple[str, str]]:
    """(extension, source) for every C file built on Windows; empty outside
    a source tree (then the parametrized test is reported as skipped)."""
    if not SETUP.exists():
        return []
    exts = _windows_build()["extensions"]
    return [(name, src) for name, ext in sorted(exts.items()) for src in _c_sources(ext)]


# ---- tools -------------------------------------------------------------------

def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (.ci/run installs clang and mingw-w64)")


def _mingw_include() -> str:
    """mingw-w64's Windows headers (the directory with _mingw.h), as its gcc
    searches them."""
    _need(MINGW + "gcc")
    proc = subprocess.run([MINGW + "gcc", "-xc", "-E", "-v", "-"], input="",
                          capture_output=True, text=True, timeout=60)
    for line in proc.stderr.splitlines():
        d = line.strip()
        if d and os.path.isfile(os.path.join(d, "_mingw.h")):
            return os.path.normpath(d)
    pytest.skip("mingw-w64's headers (_mingw.h) not found (mingw-w64-x86-64-dev)")


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)


def _check(cmd: list[str], cwd: Path | None = None) -> str:
    proc = _run(cmd, cwd)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def _msvc_cmd(mingw_include: str, *args: str) -> list[str]:
    return ["clang", *MSVC_FLAGS, "-isystem", mingw_include, "-include", str(PRELUDE), *args]


# ---- (a) the Windows sources in MSVC mode -------------------------------------

WINDOWS_SOURCES = _windows_sources()


@pytest.mark.parametrize("extension,source", WINDOWS_SOURCES,
                         ids=[src for _, src in WINDOWS_SOURCES])
def test_windows_source_compiles_in_msvc_mode(extension: str, source: str) -> None:
    _need("clang")
    mingw_include = _mingw_include()
    ext = _windows_build()["extensions"][extension]
    cmd = _msvc_cmd(mingw_include, *_include_flags(ext), *_macro_flags(ext), str(ROOT / source))
    proc = _run(cmd, ROOT)
    assert proc.returncode == 0, f"{source} in MSVC mode:\n{proc.stderr}"
    assert proc.stderr == "", proc.stderr


def test_msvc_mode_rejects_llp64_truncation_and_vlas(tmp_path: Path) -> None:
    """The flags bite: long is 32 bits there, a size_t stored in it and a VLA
    are errors, and the prelude is what makes the SDK stand-in usable."""
    _need("clang")
    mingw_include = _mingw_include()
    good = tmp_path / "good.c"
    good.write_text("#include <windows.h>\n#include <intrin.h>\n"
                    "_Static_assert(sizeof(long) == 4 && sizeof(void *) == 8, \"LLP64\");\n"
                    "LONG64 next_id(LONG64 volatile *p);\n"
                    "LONG64 next_id(LONG64 volatile *p) { return InterlockedIncrement64(p); }\n")
    _check(_msvc_cmd(mingw_include, str(good)))

    narrow = tmp_path / "narrow.c"
    narrow.write_text("#include <stddef.h>\nlong length(size_t n);\n"
                      "long length(size_t n) { return n; }\n")
    proc = _run(_msvc_cmd(mingw_include, str(narrow)))
    assert proc.returncode != 0 and "-Wshorten-64-to-32" in proc.stderr, proc.stderr

    vla = tmp_path / "vla.c"
    vla.write_text("void fill(int n);\nvoid fill(int n) { char b[n]; b[0] = 0; (void)b; }\n")
    proc = _run(_msvc_cmd(mingw_include, str(vla)))
    assert proc.returncode != 0 and "-Wvla" in proc.stderr, proc.stderr

    no_prelude = [a for a in _msvc_cmd(mingw_include, str(good))
                  if a not in ("-include", str(PRELUDE))]
    proc = _run(no_prelude)
    assert proc.returncode != 0, "the SDK stand-in now works without the prelude: drop it"


# ---- (b) the binding as a win-amd64 .pyd --------------------------------------

def _cythonize(build: Path, options: dict[str, Any]) -> Path:
    """Generate _core.c from the package's .pyx/.pxd the way setup.py does."""
    probe = _run([sys.executable, "-c", "import Cython"])
    if probe.returncode != 0:
        pytest.skip("Cython is not installed (pip install '.[test]')")
    pkg = build / "scardio"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for f in (ROOT / "src" / "scardio").iterdir():
        if f.suffix in (".pyx", ".pxd"):
            shutil.copy(f, pkg / f.name)
    for f in core_includes():  # where _core.pyx's include lines look for them
        dest = pkg / f.relative_to(CORE_PYX.parent)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    script = ("import sys\n"
              "from Cython.Build import cythonize\n"
              "from setuptools import Extension\n"
              "cythonize([Extension('scardio._core', ['scardio/_core.pyx'])], quiet=True,\n"
              f"          **{options!r})\n")
    _check([sys.executable, "-c", script], build)
    return pkg / "_core.c"


def _python_include(build: Path) -> Path:
    """The running interpreter's headers with the win-amd64 pyconfig.h in
    place of its own (Python.h includes "pyconfig.h" from its own directory,
    so the file must be replaced there, not shadowed)."""
    src = Path(sysconfig.get_paths()["include"])
    if not (src / "Python.h").exists():
        pytest.skip(f"the interpreter's C headers are not installed ({src})")
    inc = build / "python-include"
    inc.mkdir()
    for entry in src.iterdir():
        if entry.name != "pyconfig.h":
            (inc / entry.name).symlink_to(entry)
    shutil.copy(CROSS / "pyconfig.h", inc / "pyconfig.h")
    return inc


def _exports(objdump_p: str) -> set[str]:
    table = objdump_p.split("[Ordinal/Name Pointer] Table", 1)
    if len(table) < 2:
        return set()
    names = set()
    for line in table[1].splitlines()[1:]:
        m = re.match(r"\s*\[\s*\d+\]\s+(\S+)\s*$", line)
        if not m:
            break
        names.add(m.group(1))
    return names


def test_core_pyd_links_for_win_amd64(tmp_path: Path) -> None:
    _need(MINGW + "gcc", MINGW + "nm", MINGW + "dlltool", MINGW + "objdump")
    build = _windows_build()
    core = build["extensions"]["scardio._core"]
    core_c = _cythonize(tmp_path, build["cythonize"])
    py_inc = _python_include(tmp_path)
    pyver = f"{sys.version_info.major}{sys.version_info.minor}"
    cc = [MINGW + "gcc", "-O0", "-c", *_include_flags(core), *_macro_flags(core)]
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        cc.append("-DPy_GIL_DISABLED=1")  # the free-threaded build's pyconfig.h says so

    # The binding: errors that change meaning on LLP64 or across compilers.
    jobs = [[*cc, "-I", str(py_inc), "-Wall", "-Werror=implicit-function-declaration",
             "-Werror=incompatible-pointer-types", "-Werror=int-conversion",
             "-Werror=pointer-to-int-cast", "-Werror=int-to-pointer-cast",
             "-Werror=return-type", str(core_c), "-o", str(tmp_path / "_core.o")]]
    objects = [tmp_path / "_core.o"]
    for i, src in enumerate(_c_sources(core)):
        obj = tmp_path / f"core{i}_{Path(src).stem}.o"
        jobs.append([*cc, "-std=c11", "-Wall", "-Wextra", "-Werror", str(ROOT / src),
                     "-o", str(obj)])
        objects.append(obj)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for out in pool.map(lambda cmd: _run(cmd, ROOT), jobs):
            assert out.returncode == 0, out.stderr

    # An import library for exactly the Python API the binding uses.
    undefined = _check([MINGW + "nm", "-u", str(tmp_path / "_core.o")]).split()
    api = sorted({s.removeprefix("__imp_") for s in undefined
                  if re.match(r"(__imp_)?_?Py", s)})
    assert len(api) > 50, api
    dll = f"python{pyver}.dll"
    (tmp_path / "python.def").write_text(f"LIBRARY {dll}\nEXPORTS\n" + "\n".join(api) + "\n")
    _check([MINGW + "dlltool", "-d", str(tmp_path / "python.def"),
            "-l", str(tmp_path / f"libpython{pyver}.a"), "-D", dll])

    pyd = tmp_path / f"_core.cp{pyver}-win_amd64.pyd"
    libs = [f"-l{lib}" for lib in core.get("libraries") or []]
    _check([MINGW + "gcc", "-shared", "-o", str(pyd), *map(str, objects),
            f"-L{tmp_path}", f"-lpython{pyver}", *libs])

    header = _check([MINGW + "objdump", "-f", str(pyd)])
    assert "pei-x86-64" in header, header
    dump = _check([MINGW + "objdump", "-p", str(pyd)])
    assert _exports(dump) == {"PyInit__core"}, dump
    imported = set(re.findall(r"DLL Name: (\S+)", dump))
    assert dll in imported, imported


# ---- IFD-handler ABI per target -------------------------------------------------

# What drivers of each platform are built with, stated independently of the
# header: (DWORD, RESPONSECODE, their sizes).
ABI_TARGETS = {
    "x86_64-linux-gnu": ("unsigned long", "long", 8, 8),
    "aarch64-linux-gnu": ("unsigned long", "long", 8, 8),
    "i686-linux-gnu": ("unsigned long", "long", 4, 4),
    "x86_64-apple-darwin": ("uint32_t", "int32_t", 4, 4),
    "aarch64-apple-darwin": ("uint32_t", "int32_t", 4, 4),
    "x86_64-pc-windows-msvc": ("unsigned long", "long", 4, 4),
    "aarch64-pc-windows-msvc": ("unsigned long", "long", 4, 4),
}


def _abi_cmd(target: str, dword: str, rc: str, dword_size: int, rc_size: int) -> list[str]:
    # -ffreestanding: clang's own <stdint.h> and <limits.h>, no target libc.
    return ["clang", f"--target={target}", "-ffreestanding", "-fsyntax-only", "-std=c11",
            "-Wall", "-Wextra", "-Werror", f"-I{ROOT / 'native' / 'ifd'}",
            f"-DEXPECT_DWORD={dword}", f"-DEXPECT_RESPONSECODE={rc}",
            f"-DEXPECT_DWORD_SIZE={dword_size}", f"-DEXPECT_RC_SIZE={rc_size}",
            str(CROSS / "ifd_abi_sizes.c")]


@pytest.mark.parametrize("target", sorted(ABI_TARGETS))
def test_ifd_abi_types_per_target(target: str) -> None:
    _need("clang")
    if not (ROOT / "native" / "ifd" / "ifd_abi.h").exists():
        pytest.skip("needs the source tree (native/)")
    _check(_abi_cmd(target, *ABI_TARGETS[target]))


def test_ifd_abi_check_fails_on_a_wrong_expectation() -> None:
    """The probe's assertions are evaluated: macOS with Linux's types fails."""
    _need("clang")
    if not (ROOT / "native" / "ifd" / "ifd_abi.h").exists():
        pytest.skip("needs the source tree (native/)")
    proc = _run(_abi_cmd("aarch64-apple-darwin", *ABI_TARGETS["x86_64-linux-gnu"]))
    assert proc.returncode != 0
    assert "RESPONSECODE is not the expected type" in proc.stderr, proc.stderr
