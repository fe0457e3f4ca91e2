"""The test predictions of an arm's runs, aligned and resampled for the intervals.

When every run of an arm was tested on the same images (the same paths in predictions.csv:
the split seed is fixed, or the folds of one seed), the runs' rows are put in one order (the
first run's) and the bootstrap resamples of the patients are drawn ONCE for the arm and
shared by its runs, so that the arm's interval can tell the test-set sampling the runs share
from their run-to-run variation (:func:`medrepro.statistics.arm_interval.arm_mean_interval`).
When the test sets differ (a split per seed), each run's own test set is resampled.

Resamples: :func:`medrepro.statistics.bootstrap.grouped_bootstrap_indices` over the test
labels (class indices, in the aligned order) and the patient ids from the run folder's
split.csv (matched by path; an image without an id is a patient of its own), seed
``BOOTSTRAP_SEED``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from medrepro.core.run_folder import class_key
from medrepro.jobs.report.arms import Arm
from medrepro.jobs.report.runs import Run
from medrepro.jobs.report.statistics import metrics_from_predictions, prediction_arrays
from medrepro.statistics.bootstrap import group_keys, grouped_bootstrap_indices

BOOTSTRAP_SEED = 0


@dataclass
class RunTest:
    """One run's test predictions (rows in the arm's order when the arm shares its test
    set) and its metrics over the bootstrap resamples."""

    run: Run
    paths: list[str]
    truth: np.ndarray  # class indices
    predicted: np.ndarray
    probabilities: np.ndarray  # [N, C]
    patients: list | None  # patient id per image (None: unknown)
    draws: dict[str, np.ndarray]  # metric name -> [B] values over the resamples
    estimates: dict[str, float]  # metric name -> value on the whole test set

    @property
    def n_images(self) -> int:
        return len(self.truth)

    @property
    def n_patients(self) -> int:
        return len(set(group_keys(self.patients, self.n_images).tolist()))

    @property
    def positive_scores(self) -> np.ndarray:
        """The positive-class (class 1) probability of a two-class task."""
        return self.probabilities[:, 1]


@dataclass
class ArmTestSet:
    """The test predictions of an arm's completed runs that have them."""

    arm: Arm
    runs: list[RunTest]
    shared: bool  # every run tested on the same images, resampled together
    resamples: int

    @property
    def draws_by_run(self) -> dict[int, dict[str, np.ndarray]]:
        return {test.run.job: test.draws for test in self.runs}


def same_images(frames: list[pd.DataFrame]) -> bool:
    """Whether the prediction tables hold the same image paths, each once."""
    if not frames:
        return False
    first = frames[0]["path"]
    if first.duplicated().any():
        return False
    wanted = set(first)
    return all(len(f) == len(first) and set(f["path"]) == wanted for f in frames[1:])


def arm_test_set(arm: Arm, classes: list[str], resamples: int) -> ArmTestSet:
    """The arm's runs' test predictions with their resampled metrics (see the module)."""
    runs = [run for run in arm.completed if usable_predictions(run.predictions, classes)]
    frames = [run.predictions for run in runs]
    shared = same_images(frames)
    keys = [class_key(name) for name in classes]
    tests = []
    if shared:
        order = list(frames[0]["path"])
        frames = [frame.set_index("path", drop=False).loc[order].reset_index(drop=True)
                  for frame in frames]
        patients = runs[0].patient_ids(frames[0])
        truth = prediction_arrays(frames[0], classes)[0]
        samples = grouped_bootstrap_indices(truth, patients, resamples, BOOTSTRAP_SEED)
        for run, frame in zip(runs, frames):
            tests.append(_run_test(run, frame, classes, keys, patients, samples))
    else:
        for run, frame in zip(runs, frames):
            patients = run.patient_ids(frame)
            truth = prediction_arrays(frame, classes)[0]
            samples = grouped_bootstrap_indices(truth, patients, resamples, BOOTSTRAP_SEED)
            tests.append(_run_test(run, frame, classes, keys, patients, samples))
    return ArmTestSet(arm, tests, shared, resamples)


def _run_test(run, frame, classes, keys, patients, samples) -> RunTest:
    truth, predicted, probabilities = prediction_arrays(frame, classes)
    draws = metrics_from_predictions(truth, predicted, probabilities, keys, samples)
    estimates = {name: float(values[0]) for name, values in
                 metrics_from_predictions(truth, predicted, probabilities, keys).items()}
    return RunTest(run, list(frame["path"]), truth, predicted, probabilities, patients, draws,
                   estimates)


def usable_predictions(frame: pd.DataFrame | None, classes: list[str]) -> bool:
    """Whether ``frame`` is a predictions table of these classes (every label and
    prediction one of them, a probability column for each)."""
    if frame is None or not len(frame) or not classes:
        return False
    columns = {"path", "label", "predicted", *(f"prob_{name}" for name in classes)}
    return (columns <= set(frame.columns) and bool(frame["label"].isin(classes).all())
            and bool(frame["predicted"].isin(classes).all()))
