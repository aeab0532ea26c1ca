"""scripts/python_setup.sh: progress on stderr, the python path alone on stdout (so that
`py=$(bash scripts/python_setup.sh)` shows what it does), and the cheap path's install order
that keeps pip's resolver from printing its `ERROR:` line about torch's CUDA requirements."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "python_setup.sh")


def test_existing_environment_path_alone_on_stdout(tmp_path):
    """A venv that works is reused: one progress line on stderr, the path on stdout. The venv
    is a wrapper around this interpreter; PYTHON=false makes any rebuild fail at once instead of
    touching the network (the script would only rebuild if the wrapper did not work)."""
    for mod in ("torch", "pytest", "numpy", "matplotlib"):
        pytest.importorskip(mod)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    wrapper = venv / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = dict(os.environ, FNGD_VENV=str(venv), PYTHON="false")
    r = subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(wrapper)], r.stdout
    assert "python_setup:" in r.stderr and "already works" in r.stderr


def test_cheap_path_installs_torch_without_deps_last():
    text = open(SCRIPT).read()
    cheap = text[text.index('FNGD_TORCH_FULL:-0}" != "1" ]; then'):]
    cheap = cheap[:cheap.index("\nfi\n")]
    installs = [l.strip() for l in cheap.splitlines() if l.strip().startswith("pip_install")]
    assert len(installs) == 2, installs
    assert "--no-deps" not in installs[0] and "PURE_DEPS" in installs[0]
    assert installs[1].startswith('pip_install --no-deps "torch==')
    # Every pip call sends its output to stderr; the script echoes only the path to stdout.
    echoes = [l.strip() for l in text.splitlines() if re.match(r"\s*echo ", l)]
    assert echoes == ['echo "$VENV/bin/python"'] * 2, echoes
    assert re.search(r'pip install .*"\$@" 1>&2', text)
