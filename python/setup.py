"""Build step that bundles libfngd into the fngd package (metadata lives in pyproject.toml).

`pip install ./python` runs build_py, which here also configures and builds the shared library
from the repository root with CMake in a temporary directory and copies it into the package
as fngd/libfngd.so, so the installed package needs neither FNGD_LIBRARY nor a build folder.

Skipped when a libfngd.so* already sits in fngd/ (it is packaged as is), when
FNGD_SKIP_NATIVE_BUILD=1, and for editable installs (those load <repo>/build*/libfngd.so, see
fngd/_lib.py). Environment: FNGD_CMAKE_ARGS (extra configure arguments, appended last so they
override ours, e.g. -DFNGD_ENABLE_CUDA=OFF), FNGD_SOURCE_DIR (the repository root when this
directory is not inside one), CMAKE_BUILD_PARALLEL_LEVEL (build jobs, default: all cores).
"""

import glob
import os
import re
import shlex
import shutil
import subprocess
import tempfile

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py
from setuptools.errors import SetupError

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "fngd"
LIB_NAME = "libfngd.so"


def _is_source_root(path):
    return (os.path.isfile(os.path.join(path, "CMakeLists.txt"))
            and os.path.isfile(os.path.join(path, "include", "fngd.h")))


def find_source_root():
    """The repository root: $FNGD_SOURCE_DIR, else this file's parent directory. pip >= 21.3
    builds a local directory in place, so the parent is the checkout; an older pip (or a build
    from an sdist) works on a copy of python/ alone and needs FNGD_SOURCE_DIR."""
    env = os.environ.get("FNGD_SOURCE_DIR")
    candidates = [os.path.abspath(env)] if env else [os.path.dirname(HERE)]
    for path in candidates:
        if _is_source_root(path):
            return path
    raise SetupError(
        f"fngd: cannot find the libfngd sources (CMakeLists.txt and include/fngd.h) in "
        f"{candidates[0]}. Build from a repository checkout (pip install ./python from the "
        f"root), set FNGD_SOURCE_DIR to the checkout, or put a prebuilt libfngd.so in "
        f"python/{PACKAGE}/.")


def project_version():
    """The package version: project(fngd VERSION x.y.z) of the root CMakeLists.txt, the one
    source of the version number (CMake generates it into fngd_version.h as well). A build from
    an sdist without the sources takes it from the sdist's PKG-INFO."""
    pkg_info = os.path.join(HERE, "PKG-INFO")
    try:
        path, pattern = os.path.join(find_source_root(), "CMakeLists.txt"), \
            r"^project\(fngd VERSION (\d+\.\d+\.\d+)"
    except SetupError:
        if not os.path.isfile(pkg_info):
            raise
        path, pattern = pkg_info, r"^Version: (\S+)"
    with open(path) as f:
        m = re.search(pattern, f.read(), re.M)
    if not m:
        raise SetupError(f"fngd: no version found in {path}")
    return m.group(1)


def _run(cmd, what):
    print("fngd: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    try:
        subprocess.run(cmd, check=True)
    except subprocess.CalledProcessError as e:
        raise SetupError(
            f"fngd: {what} of libfngd failed (exit status {e.returncode}). The CPU build needs "
            f"a C compiler, pkg-config, OpenBLAS and LAPACKE (scripts/install_deps.sh installs "
            f"them); pass CMake options through FNGD_CMAKE_ARGS (e.g. -DFNGD_ENABLE_CUDA=OFF). "
            f"Run pip with -v to see the CMake output.") from e


def build_native_library(dest_dir):
    """Configure and build the shared library into a temporary directory and copy the real
    file (the end of the libfngd.so -> .so.0 -> .so.0.1.0 chain) to dest_dir/libfngd.so."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise SetupError(
            "fngd: cmake was not found on PATH; it is needed to build libfngd (CMake >= 3.24; "
            "scripts/install_deps.sh installs it with the CPU dependencies). Alternatively put "
            f"a prebuilt libfngd.so in python/{PACKAGE}/ or set FNGD_SKIP_NATIVE_BUILD=1 and "
            "point FNGD_LIBRARY at a library at run time.")
    source = find_source_root()
    extra = shlex.split(os.environ.get("FNGD_CMAKE_ARGS", ""))
    jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or str(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="fngd-cmake-") as build:
        _run([cmake, "-S", source, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
              "-DFNGD_BUILD_TESTS=OFF", "-DFNGD_BUILD_EXAMPLES=OFF", "-DFNGD_BUILD_BENCH=OFF",
              *extra], "configuring")
        _run([cmake, "--build", build, "--target", "fngd", "--parallel", jobs], "building")
        built = os.path.realpath(os.path.join(build, LIB_NAME))
        if not os.path.isfile(built):
            raise SetupError(f"fngd: the CMake build produced no {LIB_NAME} in {build}")
        os.makedirs(dest_dir, exist_ok=True)
        shutil.copyfile(built, os.path.join(dest_dir, LIB_NAME))
        shutil.copymode(built, os.path.join(dest_dir, LIB_NAME))


class BuildPyWithLibrary(build_py):
    """build_py, then libfngd.so into the build's package directory (unless skipped)."""

    def run(self):
        # A library left in the build directory by an earlier run must not be packaged again.
        for stale in glob.glob(os.path.join(self.build_lib, PACKAGE, "libfngd.so*")):
            os.remove(stale)
        super().run()
        if getattr(self, "editable_mode", False):
            return  # the source tree is imported; _lib.py finds <repo>/build*/libfngd.so
        if os.environ.get("FNGD_SKIP_NATIVE_BUILD") == "1":
            print("fngd: FNGD_SKIP_NATIVE_BUILD=1, libfngd not bundled", flush=True)
            return
        if glob.glob(os.path.join(HERE, PACKAGE, "libfngd.so*")):
            print(f"fngd: bundling the libfngd.so* found in {PACKAGE}/ (no CMake build)",
                  flush=True)
            return  # already copied by build_py as package data
        build_native_library(os.path.join(self.build_lib, PACKAGE))


cmdclass = {"build_py": BuildPyWithLibrary}

class BinaryDistribution(Distribution):
    """Installs to platlib and makes the wheel non-pure: it carries a native library."""

    def has_ext_modules(self):
        return True


# No Python extension inside: tag the wheel py3-none-<platform>, not cp3XY-cp3XY-<platform>.
try:
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel  # setuptools>=70.1
except ImportError:
    try:
        from wheel.bdist_wheel import bdist_wheel as _bdist_wheel
    except ImportError:
        _bdist_wheel = None

if _bdist_wheel is not None:
    class BdistWheelPlatform(_bdist_wheel):
        def get_tag(self):
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = BdistWheelPlatform

setup(version=project_version(), cmdclass=cmdclass, distclass=BinaryDistribution)
