"""The README's main command, exactly: `python train.py` learns the embedded demo data."""

import json
import subprocess
import sys

import pytest
from conftest import REPO
from native_bf16 import cpu_runs_bf16_natively


@pytest.mark.slow
def test_default_run_learns_the_demo_data(tmp_path):
    run_dir = tmp_path / "default_run"
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=1200, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["config"]["model"]["name"] == "inception_v3"
    assert results["data"]["name"].startswith("demo_")
    assert results["test"]["auroc"] >= 0.9, results["test"]
    if results["device"]["accelerator"] == "cpu":  # in bfloat16 where the CPU has it natively
        assert results["precision"] == ("bf16-mixed" if cpu_runs_bf16_natively() else "32-true")
    assert "test/auroc" in done.stdout  # the table of test metrics is printed
