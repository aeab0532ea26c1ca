"""`pip install ./python` yields a self-contained package: setup.py builds libfngd with CMake and
bundles it, so the installed fngd._lib loads it with FNGD_LIBRARY unset, from outside the
repository, in a fresh virtual environment (no torch there, no system site-packages).

Skipped with FNGD_SKIP_PIP_TEST=1 or when cmake is missing. The CUDA backend is turned off
(FNGD_CMAKE_ARGS) to keep the build to a few seconds; the default (AUTO) is not exercised.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [
    pytest.mark.pip_install,
    pytest.mark.skipif(os.environ.get("FNGD_SKIP_PIP_TEST") == "1",
                       reason="FNGD_SKIP_PIP_TEST=1"),
    pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not found"),
]

# Runs inside the new environment. fngd/__init__.py imports torch, which is not installed there,
# so the binding module is loaded from its installed file without running the package's
# __init__ (find_spec on a top-level package does not execute it).
CHECK = r"""
import ctypes, importlib.metadata, importlib.util, os, sys
spec = importlib.util.find_spec("fngd")
pkg = spec.submodule_search_locations[0]
assert pkg.startswith(sys.prefix), (pkg, sys.prefix)
s = importlib.util.spec_from_file_location("fngd_lib_check", os.path.join(pkg, "_lib.py"))
m = importlib.util.module_from_spec(s)
s.loader.exec_module(m)
lib = m.load()
assert os.path.dirname(lib._name) == pkg, lib._name
assert not os.path.islink(lib._name), "the bundled library must be a real file"
v = [ctypes.c_int() for _ in range(3)]
assert lib.fngd_get_version(*(ctypes.byref(x) for x in v)) == m.SUCCESS
wheel = importlib.metadata.distribution("fngd").read_text("WHEEL")
print("version", ".".join(str(x.value) for x in v))
print("package", importlib.metadata.version("fngd"))
print("wheel", " ".join(l for l in wheel.splitlines() if l.startswith(("Root-Is", "Tag"))))
"""


def _run(cmd, env, cwd, timeout=300):
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout


def _project_version():
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        return re.search(r"project\(fngd VERSION (\d+\.\d+\.\d+)", f.read()).group(1)


def test_pip_install_bundles_library(tmp_path):
    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot create a virtual environment with pip: {r.stderr.strip()[-300:]}")
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items()
           if k not in ("FNGD_LIBRARY", "FNGD_SKIP_NATIVE_BUILD", "FNGD_SOURCE_DIR",
                        "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["FNGD_CMAKE_ARGS"] = "-DFNGD_ENABLE_CUDA=OFF"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    # --no-build-isolation uses the environment's own setuptools; a wheel needs bdist_wheel,
    # built into setuptools >= 70.1, else from the `wheel` package (ensurepip's setuptools of
    # Python <= 3.11 has neither).
    has_bdist = ("import importlib.util as u; import sys; sys.exit(0 if "
                 "u.find_spec('setuptools.command.bdist_wheel') or u.find_spec('wheel') else 1)")
    if subprocess.run([py, "-c", has_bdist], env=env).returncode != 0:
        r = subprocess.run([py, "-m", "pip", "install", "-q", "wheel"], env=env,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            pytest.skip(f"no bdist_wheel in the new environment and `pip install wheel` "
                        f"failed: {r.stderr.strip()[-300:]}")

    _run([py, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
          os.path.join(REPO, "python")], env, cwd=str(tmp_path))
    out = _run([py, "-c", CHECK], env, cwd=str(tmp_path))
    # One version number: the library's (fngd_version.h) and the package's, both CMake's.
    assert f"version {_project_version()}" in out, out
    assert f"package {_project_version()}" in out, out
    assert "Root-Is-Purelib: false" in out and "py3-none-linux" in out, out
