"""The ctypes mirrors match include/fngd.h: field offsets, sizes and enum values printed by a
compiled C program, and struct sizes reported by the library itself."""

import ctypes
import os
import re
import shutil
import subprocess

import pytest

import fngd
from fngd import _lib

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HEADER = os.path.join(REPO, "include", "fngd.h")


def _enum_names():
    """Every FNGD_* enumerator in the header (the binding must define each one)."""
    text = open(HEADER).read()
    out = []
    for body in re.findall(r"typedef enum \w+ \{(.*?)\}", text, re.S):
        body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
        out += re.findall(r"\b(FNGD_[A-Z0-9_]+)\s*=", body)
    return out


def _version_header(d):
    """fngd.h includes fngd_version.h, which CMake generates into its build tree from
    include/fngd_version.h.in; the layout program gets its own copy, filled in from
    project(VERSION) the same way (the numbers do not affect any layout)."""
    template = os.path.join(REPO, "include", "fngd_version.h.in")
    if not os.path.exists(template):
        return
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        version = re.search(r"project\(fngd VERSION (\d+)\.(\d+)\.(\d+)", f.read()).groups()
    text = open(template).read()
    for key, value in zip(("MAJOR", "MINOR", "PATCH"), version):
        text = text.replace(f"@PROJECT_VERSION_{key}@", value)
    (d / "fngd_version.h").write_text(text.replace("@PROJECT_VERSION@", ".".join(version)))


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler to check the struct layout against the header")
    lines = ['#include <stddef.h>', '#include <stdio.h>', '#include "fngd.h"', "int main(void) {"]
    for cname, cls in _lib.STRUCTS.items():
        lines.append(f'printf("{cname} sizeof %zu\\n", sizeof({cname}));')
        for field, _ in cls._fields_:
            lines.append(f'printf("{cname} {field} %zu %zu\\n", offsetof({cname}, {field}), '
                         f'sizeof((({cname}*)0)->{field}));')
    for name in _enum_names():
        lines.append(f'printf("enum {name} %d\\n", (int){name});')
    lines += ["return 0;", "}"]
    d = tmp_path_factory.mktemp("layout")
    _version_header(d)
    src, exe = d / "layout.c", d / "layout"
    src.write_text("\n".join(lines))
    subprocess.run([cc, "-std=c11", "-I", os.path.join(REPO, "include"), "-I", str(d), str(src),
                    "-o", str(exe)], check=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout


def test_struct_offsets_and_sizes_match_header(c_layout):
    seen = 0
    for line in c_layout.splitlines():
        parts = line.split()
        if parts[0] == "enum":
            continue
        cls = _lib.STRUCTS[parts[0]]
        if parts[1] == "sizeof":
            assert ctypes.sizeof(cls) == int(parts[2]), parts[0]
            continue
        fld = getattr(cls, parts[1])
        assert (fld.offset, fld.size) == (int(parts[2]), int(parts[3])), (parts[0], parts[1])
        seen += 1
    assert seen == sum(len(c._fields_) for c in _lib.STRUCTS.values())


def test_every_header_enum_value_matches(c_layout):
    values = {p[1]: int(p[2]) for p in (l.split() for l in c_layout.splitlines())
              if p[0] == "enum"}
    assert len(values) >= 35  # the enumerators of fngd.h 0.1
    for name, value in values.items():
        assert getattr(_lib, name[len("FNGD_"):], None) == value, name


def test_library_reports_the_same_struct_sizes(lib):
    cfg = _lib.Config()
    assert lib.fngd_config_init(ctypes.byref(cfg)) == _lib.SUCCESS
    assert cfg.struct_size == ctypes.sizeof(_lib.Config)
    assert cfg.max_workspace_bytes == 1 << 30 and abs(cfg.damping - 0.1) < 1e-12
    for desc in (lib.fngd_linear_desc(3, 4, 1), lib.fngd_conv2d_desc(3, 4, 8, 8, 3, 3, 0),
                 lib.fngd_norm_affine_desc(4, 16, 1), lib.fngd_generic_desc(10)):
        assert desc.struct_size == ctypes.sizeof(_lib.LayerDesc)
    d = lib.fngd_conv2d_desc(3, 4, 8, 9, 3, 5, 1)
    assert (d.kind, d.in_channels, d.out_channels, d.in_h, d.in_w, d.kernel_h, d.kernel_w,
            d.has_bias, d.stride_h, d.dilation_w) == (_lib.LAYER_CONV2D, 3, 4, 8, 9, 3, 5, 1, 1, 1)
    assert fngd.library_version() >= (0, 1, 0)
    assert _lib.status_string(_lib.ERROR_INVALID_STATE).startswith("invalid state")


def test_errors_carry_the_library_message(lib):
    cfg = _lib.Config()
    lib.fngd_config_init(ctypes.byref(cfg))  # max_batch stays 0: invalid
    h = _lib.Handle()
    with pytest.raises(fngd.FNGDError, match="max_batch") as info:
        _lib.check(lib.fngd_create(ctypes.byref(cfg), ctypes.byref(h)), None, "fngd_create")
    assert info.value.status == _lib.ERROR_INVALID_ARGUMENT


def test_missing_library_error_names_the_paths(monkeypatch):
    monkeypatch.setattr(_lib, "_LIB", None)
    monkeypatch.setattr(_lib, "candidate_paths", lambda: ["/nonexistent/libfngd.so"])
    with pytest.raises(fngd.LibraryNotFoundError, match="/nonexistent/libfngd.so.*does not exist"):
        _lib.load()


def test_search_order(monkeypatch, tmp_path):
    monkeypatch.setenv("FNGD_LIBRARY", str(tmp_path / "custom.so"))
    assert _lib.candidate_paths() == [str(tmp_path / "custom.so")]  # explicit: no fallback
    monkeypatch.delenv("FNGD_LIBRARY")
    paths = _lib.candidate_paths()
    assert paths and all(p.endswith("libfngd.so") for p in paths)
    assert all(os.path.basename(os.path.dirname(p)).startswith("build") for p in paths)


def test_sanitizer_builds_are_skipped(tmp_path):
    fake = tmp_path / "libfngd.so"
    fake.write_bytes(b"\x7fELF....libasan.so.8\x00....")
    assert _lib._needs_sanitizer_runtime(str(fake))
    assert not _lib._needs_sanitizer_runtime(_lib.load()._name)
