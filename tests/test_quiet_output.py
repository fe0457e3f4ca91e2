"""What the commands print: the metric table, the run folder and errors, without the
libraries' noise (torch's LeafSpec deprecation warning, Lightning's advertising tip and its
``Trainer(limit_*=...) was configured`` lines) and without a line shown twice; and each job's
log file named after its command (train.log, audit.log). About 2-3 minutes on a 2-core CPU:
a tiny ``python train.py`` run, a 2-job ``medrepro-train -m`` sweep and a failing audit, each
in a subprocess, as a user runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY_RUN

TINY = [
    *[o for o in TINY_RUN if not o.startswith(("trainer.limit_", "data.source.images_per_class"))],
    "data.source.images_per_class=12",
    "model.name=test_resnet",
    # =1 and =1.0 are the values for which Lightning prints its "was configured so" lines
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1.0",
    "trainer.limit_test_batches=1",
    "~callbacks.run_plots",
]
NOISE = {
    "torch's LeafSpec deprecation warning": re.compile(r"LeafSpec"),
    "Lightning's advertising tip": re.compile(r"💡|Tip:|litlogger|litmodels"),
    "Lightning's limit_* lines": re.compile(r"Trainer\(limit_\w+=.*\) was configured"),
    # only where trainer.precision=auto picks bf16-mixed (CPUs with native bfloat16)
    "Lightning's model summary on bf16": re.compile(r"is not supported by the model summary"),
}
# "[2026-01-01 12:00:00,000][name][INFO] - " or "[2026-...][HYDRA] ": what a log line adds
LOG_PREFIX = re.compile(r"^(\[[^\]]*\])+( - )?\s*")


def run_command(command: list[str], cwd: Path = REPO) -> str:
    """Run ``command`` as a user would; return stdout and stderr interleaved as shown."""
    done = subprocess.run(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=900, check=False,
    )
    return f"exit status {done.returncode}\n{done.stdout}"


def console_script(name: str) -> str:
    """The console script pip generated for this interpreter's environment."""
    path = Path(sys.executable).parent / name
    assert path.is_file(), f"{path} is missing: pip install -e . (or pip install .) first"
    return str(path)


def assert_quiet(output: str) -> None:
    for what, pattern in NOISE.items():
        shown = [line for line in output.splitlines() if pattern.search(line)]
        assert not shown, f"{what} is shown: {shown[0]}"
    previous = None
    for line in output.splitlines():
        text = LOG_PREFIX.sub("", line).strip()
        if not text:
            continue
        assert text != previous, f"shown twice in a row: {text}"
        previous = text


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, demo_dir) -> tuple[str, Path]:
    run_dir = tmp_path_factory.mktemp("quiet") / "run"
    output = run_command([sys.executable, "train.py", "data=demo_pneumonia", *TINY,
                          f"paths.demo_dir={demo_dir}", f"hydra.run.dir={run_dir}"])
    assert output.startswith("exit status 0"), output[-3000:]
    return output, run_dir


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, demo_dir) -> tuple[str, Path]:
    sweep_dir = tmp_path_factory.mktemp("quiet") / "sweep"
    output = run_command([console_script("medrepro-train"), "-m", "data=demo_pneumonia", "seed=0,1",
                          *TINY, f"paths.demo_dir={demo_dir}", f"hydra.sweep.dir={sweep_dir}",
                          "hydra.callbacks.sweep_report.resamples=100"])
    assert output.startswith("exit status 0"), output[-3000:]
    return output, sweep_dir


def test_a_run_shows_the_metrics_and_the_run_folder_without_library_noise(single_run):
    output, run_dir = single_run
    assert_quiet(output)
    assert "Test metric" in output and "test/auroc" in output
    assert f"Run folder: {run_dir.resolve()}" in output
    assert "GPU available" in output  # Lightning's own useful lines stay


def test_a_sweep_shows_each_job_and_the_report_once_without_library_noise(sweep):
    output, sweep_dir = sweep
    assert_quiet(output)
    assert output.count("Test metric") == 2
    assert output.count(f"Sweep report: {sweep_dir / 'summary.md'}") == 1


def test_each_job_logs_to_a_file_named_after_its_command(single_run, sweep):
    _, run_dir = single_run
    _, sweep_dir = sweep
    for folder in (run_dir, sweep_dir / "0", sweep_dir / "1"):
        assert sorted(p.name for p in folder.glob("*.log")) == ["train.log"]
        assert "Run folder:" in (folder / "train.log").read_text()


def test_an_audit_error_is_shown_once_and_kept_in_audit_log(tmp_path):
    output = run_command([sys.executable, "audit.py", "data=folder", f"data.root={tmp_path / 'nowhere'}",
                          f"hydra.run.dir={tmp_path / 'audit'}"])
    assert output.startswith("exit status 1")
    sentence = f"Data folder not found at {tmp_path / 'nowhere'}"
    assert output.count(sentence) == 1 and f"Error: {sentence}" in output
    assert "Traceback" not in output
    assert_quiet(output)
    assert [p.name for p in (tmp_path / "audit").glob("*.log")] == ["audit.log"]
    assert sentence in (tmp_path / "audit" / "audit.log").read_text()
