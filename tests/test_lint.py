"""The lint rules the code base keeps (pyproject.toml [tool.ruff]), among them the ban on
importing datamodules, callbacks or lightning_modules by their bare names."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def _ruff() -> str:
    """The ruff of this interpreter's environment (a dev dependency), else the one on PATH."""
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    return ruff


def test_ruff_finds_nothing():
    ruff = _ruff()
    done = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_the_ban_on_bare_names_is_in_force():
    """A module that imports ``callbacks`` by its bare name is refused by the lint rule."""
    ruff = _ruff()
    done = subprocess.run(
        [ruff, "check", "--no-cache", "--stdin-filename", "medrepro/jobs/probe.py", "-"],
        input="from callbacks.results_json import ResultsJSON\n\nprint(ResultsJSON)\n",
        cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "TID251" in done.stdout, done.stdout + done.stderr
