"""One run folder's test numbers with their 95 % intervals, shared by model_card.md and
report.md: AUROC with DeLong's interval (two classes) and the percentile bootstrap over
patients, proportions with Wilson intervals, and the folder's tables read once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medrepro.statistics.bootstrap import group_keys, grouped_bootstrap_interval
from medrepro.statistics.delong import auc, delong_interval
from medrepro.statistics.proportions import Proportion, proportion

RESAMPLES = 1000  # bootstrap resamples of the patients
BOOTSTRAP_SEED = 0
LEVEL = 0.95


def read_table(path: Path) -> pd.DataFrame | None:
    """A CSV of the run folder, or ``None`` when it is not there."""
    return pd.read_csv(path) if Path(path).is_file() else None


def patient_ids(predictions: pd.DataFrame | None, split: pd.DataFrame | None) -> list | None:
    """The patient id of each prediction from the folder's split.csv, matched by path
    (``None`` per image where there is none; ``None`` without split.csv or its ids)."""
    if predictions is None or split is None or "patient_id" not in split:
        return None
    ids = dict(zip(split["path"], split["patient_id"]))
    return [ids.get(path) for path in predictions["path"]]


def auroc(truth: np.ndarray, probabilities: np.ndarray) -> float:
    """AUROC of ``[N, C]`` probabilities: the positive class (index 1) for two classes, the
    macro average of one-vs-rest AUROCs for more; NaN when a class is absent."""
    if len(np.unique(truth)) < probabilities.shape[1]:
        return math.nan
    if probabilities.shape[1] == 2:
        return auc(truth == 1, probabilities[:, 1])
    # one-vs-rest, macro: the unweighted mean of each class's AUROC against the rest
    return float(np.mean([auc(truth == c, probabilities[:, c]) for c in range(probabilities.shape[1])]))


@dataclass(frozen=True)
class AurocEstimate:
    """The test AUROC with DeLong's interval (two classes; ``None`` for more) and the
    percentile bootstrap interval over patients."""

    value: float
    delong: tuple[float, float] | None
    bootstrap: tuple[float, float]
    images: int
    patients: int
    resamples: int


def auroc_estimate(truth, probabilities, patients, resamples: int = RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> AurocEstimate | None:
    """``None`` when the AUROC is undefined (a class without test images)."""
    truth = np.asarray(truth)
    probabilities = np.asarray(probabilities, dtype=float)
    if not np.isfinite(auroc(truth, probabilities)):
        return None
    value, low, high = grouped_bootstrap_interval(
        lambda i: auroc(truth[i], probabilities[i]), truth, patients, resamples=resamples,
        seed=seed, level=LEVEL)
    delong = None
    if probabilities.shape[1] == 2:
        _, d_low, d_high = delong_interval(truth, probabilities[:, 1], level=LEVEL)
        delong = (d_low, d_high)
    n_patients = len(set(group_keys(patients, len(truth)).tolist()))
    return AurocEstimate(value, delong, (low, high), len(truth), n_patients, resamples)


def auroc_rows(estimate: AurocEstimate | None) -> list[str]:
    """Table rows ``| metric | value | 95 % CI | counts |`` of the AUROC."""
    if estimate is None:
        return []
    rows = []
    if estimate.delong is not None:
        rows.append(f"| AUROC (DeLong) | {estimate.value:.3f} | {estimate.delong[0]:.3f} to "
                    f"{estimate.delong[1]:.3f} | {estimate.images} images |")
    low, high = estimate.bootstrap
    rows.append(f"| AUROC (bootstrap over patients) | {estimate.value:.3f} | {low:.3f} to {high:.3f} | "
                f"{estimate.patients} patients |")
    return rows


def proportion_row(name: str, successes: int, trials: int) -> str:
    """A table row ``| name | value | 95 % CI | k/n |`` with the Wilson interval."""
    if trials == 0:
        return f"| {name} | n/a | n/a | 0/0 |"
    share = proportion(successes, trials, LEVEL)
    return f"| {name} | {share.value:.3f} | {share.low:.3f} to {share.high:.3f} | {successes}/{trials} |"


def percent(share: Proportion) -> str:
    """``87.5 % (95 % CI 69.0 to 95.7 %; 14/16)``; ``n/a (0/0)`` without trials."""
    if share.trials == 0:
        return "n/a (0/0)"
    return (f"{100 * share.value:.1f} % (95 % CI {100 * share.low:.1f} to {100 * share.high:.1f} %; "
            f"{share.successes}/{share.trials})")


def initialisation(model: dict) -> str:
    """How the model's weights started, in words, from the run's ``model`` settings."""
    if model.get("weights"):
        return f"initialised from the file {model['weights']}"
    if model.get("pretrained"):
        return "initialised from timm's ImageNet weights"
    return "trained from scratch (random initialisation)"
