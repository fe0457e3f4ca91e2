"""The README's `make train` / `make test`: on a disk without room for PyTorch, the first
installation stops with one sentence before pip starts (instead of pip's "No space left on
device" part-way through several GB of downloads and copies)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import REPO


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("df") is None,
                    reason="needs make and df")
def test_the_first_install_stops_with_one_sentence_when_the_disk_is_too_small(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")  # pip is never asked to read it
    free_kb = int(subprocess.run(["df", "-Pk", str(tmp_path)], capture_output=True, text=True,
                                 check=True).stdout.splitlines()[1].split()[3])
    needed_kb = free_kb + 10**9  # 1 TB more than the disk has
    done = subprocess.run(["make", "install", f"NEED_KB={needed_kb}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0
    sentences = [line for line in done.stderr.splitlines() if not line.startswith("make")]
    assert len(sentences) == 1, done.stderr
    match = re.fullmatch(r"Installing needs about (\d+) GB of free disk where \.venv is \(PyTorch "
                         r"and its CUDA libraries\) and (\d+) GB are free: free some space, or set "
                         r"VENV to a folder on another disk, and run make again\.", sentences[0])
    assert match, sentences[0]
    assert int(match[1]) == needed_kb // 10**6 and abs(int(match[2]) - free_kb // 10**6) <= 1
    assert "pip install" not in done.stdout  # stopped before pip
    assert not (tmp_path / ".venv" / ".installed").exists()
