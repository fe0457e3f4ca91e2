"""Readable figures and tables: every count of a confusion matrix legible on its cell, loss
curves readable when one epoch's loss is hundreds of times the rest, whole-number epochs,
and seeds and job numbers written as integers in summary.csv and summary.md.

Contrast is measured independently of medrepro: the cell's colour is read from the rendered
pixels, the text's from its Text artist, and the WCAG 2 contrast ratio computed here.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from matplotlib.colors import to_rgb
from test_report_numbers import JOBS, cells, report_command, section, write_hand_built_run

from medrepro.core.figures import draw_confusion_matrix, draw_learning_curves
from medrepro.jobs.report.arms import group_arms
from medrepro.jobs.report.plots import draw_arm_learning_curves
from medrepro.jobs.report.runs import load_runs

WCAG_NORMAL_TEXT = 4.5
WHOLE_NUMBER = re.compile(r"^\d+$")


def luminance(rgb) -> float:
    """WCAG 2 relative luminance of an sRGB colour in [0, 1]."""
    def linear(c):
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (linear(float(c)) for c in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(first, second) -> float:
    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


# --------------------------------------------------------------------------- confusion matrix

MATRICES = {
    # every count above half the largest: the old rule wrote all four in white, the 21 on
    # the lightest cell
    "all above half the largest": [[25, 21], [23, 30]],
    # counts across the whole colour map, 21 just above half of 40 (a mid-blue cell)
    "whole colour map": [[0, 2, 5, 9], [14, 19, 21, 24], [27, 30, 33, 36], [38, 39, 40, 1]],
    # summed over runs, stored as floats: still shown as whole numbers; 21 near the light end
    "light 21 of 400, floats": [[400.0, 21.0, 3.0], [30.0, 380.0, 0.0], [12.0, 21.0, 350.0]],
}


@pytest.mark.parametrize("name", MATRICES)
def test_every_count_is_legible_on_its_cell(name):
    matrix = np.asarray(MATRICES[name])
    classes = [f"class {i}" for i in range(len(matrix))]
    figure = draw_confusion_matrix(matrix, classes, name)
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3] / 255.0
    height = pixels.shape[0]
    axis = figure.axes[0]
    texts = axis.texts
    assert len(texts) == matrix.size
    worst = np.inf
    for text in texts:
        column, row = (round(v) for v in text.get_position())
        count, *percent = text.get_text().split("\n")
        assert count == str(int(matrix[row, column])), (name, row, column, text.get_text())
        if percent:  # the share of the true class's images
            assert percent[0] == f"{100 * matrix[row, column] / matrix[row].sum():.1f}%"
        # the cell's colour, away from the text: a point inside the cell near its corner
        x, y = axis.transData.transform((column - 0.38, row - 0.38))
        cell = pixels[round(float(height - y)), round(float(x))]
        ratio = contrast(to_rgb(text.get_color()), cell)
        worst = min(worst, ratio)
        assert ratio >= WCAG_NORMAL_TEXT, (
            f"{name}: count {count} at ({row}, {column}) in {text.get_color()} on "
            f"{np.round(cell, 3)}: contrast {ratio:.2f}")
    print(f"{name}: lowest contrast {worst:.2f}")


# --------------------------------------------------------------------------- learning curves


def history(val_loss: list[float]) -> pd.DataFrame:
    epochs = len(val_loss)
    return pd.DataFrame({
        "epoch": np.arange(1, epochs + 1),
        "train/loss": np.linspace(0.7, 0.3, epochs), "val/loss": val_loss,
        "train/acc": np.linspace(0.5, 0.8, epochs), "val/acc": np.linspace(0.5, 0.75, epochs),
    })


def loss_axis(figure):
    return next(axis for axis in figure.axes if "loss" in axis.get_ylabel())


def words(figure) -> str:
    """Every piece of text on the figure."""
    return "\n".join(t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text")))


def assert_whole_number_epochs(figure) -> None:
    figure.canvas.draw()
    for axis in figure.axes:
        low, high = sorted(axis.get_xlim())
        shown = [(tick, label.get_text()) for tick, label in
                 zip(axis.get_xticks(), axis.get_xticklabels()) if low <= tick <= high]
        assert shown, axis.get_title()
        for tick, label in shown:
            assert tick == round(tick) and WHOLE_NUMBER.match(label.replace("−", "-")), (
                axis.get_title(), tick, label)
        for line in axis.get_lines():  # epochs as metrics.csv counts them, from 1
            assert min(line.get_xdata()) == 1


def test_a_first_val_loss_1000_times_the_rest_turns_the_loss_axis_logarithmic():
    rest = [0.32, 0.30, 0.28, 0.27]
    frame = history([1000 * 0.31, *rest])
    figure = draw_learning_curves(frame)
    assert loss_axis(figure).get_yscale() == "log"
    note = next(line for line in words(figure).splitlines() if "log scale" in line)
    # the note names the point and how far above the median of the other losses it is
    others = np.concatenate([frame["train/loss"], rest])
    expected = 310 / np.median(others)
    shown = float(re.search(r"([\d,]+)×", words(figure)).group(1).replace(",", ""))
    assert abs(shown - expected) <= 0.5, (shown, expected)
    assert "val loss at epoch 1" in note
    assert "(log scale)" in loss_axis(figure).get_ylabel()
    assert_whole_number_epochs(figure)


def test_ordinary_losses_keep_a_linear_axis():
    figure = draw_learning_curves(history([0.9, 0.6, 0.45, 0.40, 0.38, 0.36, 0.35]))
    assert loss_axis(figure).get_yscale() == "linear"
    assert "log scale" not in words(figure) and "clipped" not in words(figure)
    assert_whole_number_epochs(figure)


def test_a_single_epoch_still_has_a_whole_number_tick():
    assert_whole_number_epochs(draw_learning_curves(history([0.5])))


def test_a_zero_loss_clips_the_axis_instead_and_says_so():
    frame = history([500.0, 0.3, 0.0, 0.28, 0.27])
    figure = draw_learning_curves(frame)
    axis = loss_axis(figure)
    assert axis.get_yscale() == "linear" and "clipped" in axis.get_ylabel()
    assert axis.get_ylim()[1] < 5  # 500 is off the scale; the other points fill the axis
    assert "val loss at epoch 1 (500)" in words(figure)


# --------------------------------------------------------------------------- the sweep report


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    """The hand-built 6-job sweep of test_report_numbers (one failed job), the runs of arm
    "lr 0.001" with a first val loss 1000x the rest, reported by ``python report.py``."""
    sweep = tmp_path_factory.mktemp("readable_sweep")
    for job in JOBS:
        write_hand_built_run(sweep / str(job[0]), *job)
        metrics = sweep / str(job[0]) / "metrics.csv"
        if metrics.is_file() and job[1] == 0.001:
            frame = pd.read_csv(metrics)
            frame.loc[0, "val/loss"] = 1000 * frame["val/loss"].iloc[1]
            frame.to_csv(metrics, index=False)
    done = subprocess.run(report_command(sweep, 50), check=False, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep


def test_summary_csv_writes_seeds_and_job_numbers_as_integers(small_sweep):
    with open(small_sweep / "summary.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    seeds = {int(job): seed for job, _, seed, *_ in JOBS}
    run_rows = [row for row in rows if row["row"] == "run"]
    assert run_rows
    for row in rows:
        for column in ("seed", "job", "n_runs"):
            assert row[column] == "" or WHOLE_NUMBER.match(row[column]), (column, row[column])
    for row in run_rows:
        assert int(row["seed"]) == seeds[int(row["job"])]
    table = pd.read_csv(small_sweep / "summary.csv", dtype=str)
    assert set(table.loc[table["row"] == "run", "seed"]) == {"0", "1", "2"}


def test_summary_md_tables_write_seeds_and_job_numbers_as_integers(small_sweep):
    text = (small_sweep / "summary.md").read_text()
    runs = section(text, "Runs")
    assert len(runs) == len(JOBS)
    for line in runs:
        _, seed, job, *_ = cells(line)
        assert WHOLE_NUMBER.match(seed) and WHOLE_NUMBER.match(job), line
    intervals = section(text, "95% confidence intervals per run")
    assert len(intervals) == sum(job[3] is not None for job in JOBS)
    for line in intervals:
        assert WHOLE_NUMBER.match(cells(line)[1]), line


def test_sweep_learning_curves_use_a_log_loss_axis_for_the_outlier(small_sweep):
    runs = load_runs(small_sweep)
    arms = group_arms(runs, runs[0].config.get("reference"))
    figure = draw_arm_learning_curves(arms)
    assert loss_axis(figure).get_yscale() == "log"
    assert "log scale: the mean val loss of lr 0.001 at epoch 1" in words(figure).replace("\n", " ")
    assert_whole_number_epochs(figure)
