"""Build definitions: the Cython binding over the C core, and the simulated
reader driver (a plain shared library shipped inside the package).

Metadata lives in pyproject.toml; this file only says what to compile,
because the sources depend on the platform.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

IS_WINDOWS = sys.platform == "win32"

CORE_SOURCES = [
    "native/core/status.c",
    "native/core/sync.c",
    "native/core/queue.c",
    "native/core/device.c",
    "native/core/fork.c",
    "native/core/loops.c",
    "native/core/track_set.c",
]
IFD_SOURCES = [
    "native/ifd/ifd_backend.c",
    "native/ifd/ifd_log.c",
    "native/ifd/atr_info.c",
    "native/ifd/ifd_quirks.c",
]
# Windows only: the device-path backend (DeviceIoControl + IOCP), reader
# discovery, and scio_list_paths / scio_open_path over them.
WIN32_SOURCES = [
    "native/win32/scio_win32.c",
    "native/win32/discover.c",
    "native/win32/paths.c",
]
# Elsewhere: no platform reader paths (readers are reached through IFD handlers).
POSIX_SOURCES = ["native/posix/paths.c"]
# Every platform: readers held by the PC/SC resource manager (the client
# library is loaded at run time, so nothing is linked).
PCSC_SOURCES = ["native/pcsc/pcsc_backend.c"]
SIM_SOURCES = ["native/sim/sim_ifd.c", "native/sim/card.c", "native/sim/ext_card.c",
               "native/sim/sim_socket.c"]

# Shared libraries that are not Python modules: no PyInit, plain file name.
PLAIN_LIBRARIES = {"scardio.libscardio_sim"}

if IS_WINDOWS:
    core_sources = CORE_SOURCES + IFD_SOURCES + PCSC_SOURCES + WIN32_SOURCES
    # discover.c: SetupDi* and CM_Get_Device_Interface_List*.
    core_libs = ["setupapi", "cfgmgr32"]
    core_args = []
    sim_args = []
else:
    core_sources = CORE_SOURCES + IFD_SOURCES + PCSC_SOURCES + POSIX_SOURCES
    core_libs = ["dl", "pthread"]
    # Hidden by default: only the module init and the log_msg family
    # (which drivers import) are exported.
    core_args = ["-fvisibility=hidden", "-Wall", "-Wno-unused-function"]
    sim_args = ["-std=c11", "-fvisibility=hidden", "-Wall", "-Wextra", "-pthread"]


class BuildExt(build_ext):
    """build_ext that runs Cython and also builds plain shared libraries."""

    def run(self):
        # Cython runs at build time only, so that the sdist (whose file list
        # comes from the extensions' sources) carries the .pyx, never
        # generated C, and setup.py loads without Cython.
        from Cython.Build import cythonize
        for ext in self.extensions:
            # cythonize returns copies; build_ext's own state lives on `ext`.
            (compiled,) = cythonize([ext], language_level=3,
                                    compiler_directives={"embedsignature": True})
            ext.sources = compiled.sources
        super().run()

    def get_ext_filename(self, fullname):
        # Called with the full dotted name and, by get_ext_fullpath, with
        # only its last component.
        if any(fullname == lib or fullname == lib.rsplit(".", 1)[1]
               for lib in PLAIN_LIBRARIES):
            suffix = ".dll" if IS_WINDOWS else ".so"
            return os.path.join(*fullname.split(".")) + suffix
        return super().get_ext_filename(fullname)

    def build_extension(self, ext):
        # MSVC needs C11 mode for _Static_assert / _Generic (sim_ifd.c) and
        # the C99 parts of the core; mingw-w64 gcc is C11 by default.
        if IS_WINDOWS and self.compiler.compiler_type == "msvc":
            ext.extra_compile_args = list(ext.extra_compile_args or []) + ["/std:c11"]
        super().build_extension(ext)

    def get_export_symbols(self, ext):
        if ext.name in PLAIN_LIBRARIES:
            return ext.export_symbols
        return super().get_export_symbols(ext)


core = Extension(
    "scardio._core",
    sources=["src/scardio/_core.pyx"] + core_sources,
    include_dirs=["native", "native/ifd"] + (["native/win32"] if IS_WINDOWS else []),
    libraries=core_libs,
    extra_compile_args=core_args,
)

sim = Extension(
    "scardio.libscardio_sim",
    sources=SIM_SOURCES,
    include_dirs=["native", "native/sim", "native/ifd"],
    libraries=[] if IS_WINDOWS else ["pthread"],
    extra_compile_args=sim_args,
)

setup(
    ext_modules=[core, sim],
    cmdclass={"build_ext": BuildExt},
)
