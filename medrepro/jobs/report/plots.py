"""The sweep report's figures: learning curves per arm (mean ± SD over runs), confusion
matrices per arm, every arm's ROC curve on one plot, swept parameter vs main metric, and a
reliability diagram per arm."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import auc, roc_curve

from medrepro.core.figures import (
    integer_epochs,
    plot_confusion_matrix,
    plt,
    save_figure,
    scale_loss_axis,
)
from medrepro.jobs.report.arms import Arm
from medrepro.statistics.calibration import reliability_table


def draw_arm_learning_curves(arms: list[Arm]) -> Figure | None:
    """Accuracy and loss per epoch: the mean over an arm's runs, shaded ± 1 SD;
    validation solid, training dashed. Whole-number epochs; the loss axis turns
    logarithmic (or clipped) when one mean would flatten the others, as the run's own
    learning curves do (medrepro.core.figures.scale_loss_axis)."""
    histories = [(arm, [r.history for r in arm.completed if r.history is not None]) for arm in arms]
    if not any(h for _, h in histories):
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    losses = {}
    for colour, (arm, frames) in zip(_colours(len(arms)), histories):
        if not frames:
            continue
        for axis, metric in zip(axes, ("acc", "loss")):
            for stage, style in (("val", "-"), ("train", "--")):
                column = f"{stage}/{metric}"
                table = pd.concat([f.set_index("epoch")[column] for f in frames if column in f], axis=1)
                if table.empty:
                    continue
                mean, sd = table.mean(axis=1), table.std(axis=1, ddof=1).fillna(0)
                label = f"{arm.label} ({stage}, n={table.shape[1]})"
                axis.plot(mean.index, mean, style, color=colour, marker="o", markersize=3, label=label)
                axis.fill_between(mean.index, mean - sd, mean + sd, color=colour, alpha=0.15)
                if metric == "loss":
                    losses[f"mean {stage} loss of {arm.label}"] = mean
    for axis, name in zip(axes, ("accuracy", "loss")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.set_title(f"{name} per epoch (mean ± SD over runs)")
        axis.grid(alpha=0.3)
        integer_epochs(axis)
    scale_loss_axis(axes[1], losses)
    axes[1].legend(fontsize=7, loc="best")
    return figure


def plot_arm_learning_curves(arms: list[Arm], path: Path) -> Path | None:
    figure = draw_arm_learning_curves(arms)
    return None if figure is None else save_figure(figure, path)


def plot_arm_confusion_matrices(arms: list[Arm], folder: Path) -> list[Path]:
    """Test confusion matrix of each arm, summed over its completed runs."""
    paths = []
    for arm in arms:
        matrices = [r.results.get("confusion_matrix", {}).get("test") for r in arm.completed]
        matrices = [m for m in matrices if m]
        if not matrices:
            continue
        total = np.sum([m["rows_true_columns_predicted"] for m in matrices], axis=0)
        title = f"{arm.label}: test, summed over {len(matrices)} run(s)"
        paths.append(plot_confusion_matrix(total, matrices[0]["classes"],
                                           folder / f"confusion_{slug(arm.label)}.png", title))
    return paths


def plot_arm_roc_curves(arms: list[Arm], classes: list[str], path: Path) -> Path | None:
    """One ROC curve per arm from its runs' pooled test predictions (binary: the positive
    class; multi-class: micro-average over classes, one-vs-rest)."""
    figure, axis = plt.subplots(figsize=(5.5, 5.5))
    drawn = False
    for colour, arm in zip(_colours(len(arms)), arms):
        frames = [r.predictions for r in arm.completed if r.predictions is not None]
        if not frames:
            continue
        pooled = pd.concat(frames, ignore_index=True)
        if len(classes) == 2:
            truth = (pooled["label"] == classes[1]).astype(int).to_numpy()
            scores = pooled[f"prob_{classes[1]}"].to_numpy()
        else:
            truth = np.stack([(pooled["label"] == c).to_numpy() for c in classes], 1).astype(int).ravel()
            scores = pooled[[f"prob_{c}" for c in classes]].to_numpy().ravel()
        if len(np.unique(truth)) < 2:
            continue
        fpr, tpr, _ = roc_curve(truth, scores)
        aurocs = [r.metric("test/auroc") for r in arm.completed if r.metric("test/auroc") is not None]
        spread = f", runs {np.mean(aurocs):.3f} ± {np.std(aurocs, ddof=1):.3f}" if len(aurocs) > 1 else ""
        axis.plot(fpr, tpr, color=colour, label=f"{arm.label} (pooled AUC {auc(fpr, tpr):.3f}{spread})")
        drawn = True
    if not drawn:
        plt.close(figure)
        return None
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
    axis.set_xlabel("false positive rate (1 - specificity)")
    axis.set_ylabel("true positive rate (sensitivity)")
    kind = f"positive class {classes[1]}" if len(classes) == 2 else "micro-average, one-vs-rest"
    axis.set_title(f"test ROC curves of all arms ({kind})", fontsize=9)
    axis.legend(loc="lower right", fontsize=7)
    axis.grid(alpha=0.3)
    return save_figure(figure, path)


def plot_parameter_vs_metric(
    arms: list[Arm], metric: str, parameter: str, path: Path, log_x: bool = False
) -> Path | None:
    """Mean ± SD of ``metric`` per arm against the swept value, with the paper's points."""
    numeric = all(isinstance(a.value, (int, float)) and not isinstance(a.value, bool) for a in arms)
    positions = [a.value if numeric else i for i, a in enumerate(arms)]
    figure, axis = plt.subplots(figsize=(6, 4.2))
    ours_drawn = False
    for x, arm in zip(positions, arms):
        values = [r.metric(metric) for r in arm.completed]
        values = [v for v in values if v is not None]
        if values:
            sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            axis.errorbar(x, np.mean(values), yerr=sd, fmt="o", color="C0", capsize=4,
                          label=None if ours_drawn else "this reproduction (mean ± SD)")
            axis.scatter([x] * len(values), values, s=10, color="C0", alpha=0.4)
            ours_drawn = True
    paper_drawn = False
    for x, arm in zip(positions, arms):
        reference = arm.reference.get(metric)
        paper = reference.get("mean", reference.get("best")) if isinstance(reference, dict) else reference
        if paper is not None:
            axis.plot(x, paper, "x", color="C3", markersize=9, mew=2,
                      label=None if paper_drawn else "paper")
            paper_drawn = True
    if not ours_drawn and not paper_drawn:
        plt.close(figure)
        return None
    if log_x and numeric:
        axis.set_xscale("log")
    if not numeric:
        axis.set_xticks(positions, [a.label for a in arms], rotation=20, ha="right", fontsize=8)
    elif positions:
        axis.set_xticks(positions, [f"{p:g}" for p in positions])
    axis.set_xlabel(parameter or "arm")
    axis.set_ylabel(metric)
    axis.set_title(f"{metric} by {parameter or 'arm'}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(figure, path)


def draw_reliability_diagram(label: str, runs: list[tuple[str, np.ndarray, np.ndarray]],
                             bins: int) -> Figure | None:
    """An arm's reliability diagram: for each run (``(name, truth, probabilities)``, the
    probabilities ``[N]`` of the positive class or ``[N, C]``) the observed frequency
    against the mean predicted probability per equal-width bin (thin), the same for the
    runs' pooled predictions (thick, points sized by the images in the bin), the diagonal
    of perfect calibration, and below it how many images each bin holds (pooled)."""
    runs = [(name, truth, probabilities) for name, truth, probabilities in runs if len(truth)]
    if not runs:
        return None
    multi = np.asarray(runs[0][2]).ndim == 2
    figure, (axis, counts_axis) = plt.subplots(2, 1, figsize=(5.5, 6.2), sharex=True,
                                               gridspec_kw={"height_ratios": [3, 1]})
    axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    for colour, (name, truth, probabilities) in zip(_colours(len(runs)), runs):
        table = reliability_table(truth, probabilities, bins).dropna()
        axis.plot(table["mean_confidence"], table["observed_frequency"], "-o", color=colour,
                  linewidth=1, markersize=3, alpha=0.6, label=name)
    truth = np.concatenate([t for _, t, _ in runs])
    probabilities = np.concatenate([p for _, _, p in runs])
    pooled = reliability_table(truth, probabilities, bins)
    shown = pooled.dropna()
    sizes = 15 + 150 * shown["count"] / max(int(shown["count"].max()), 1)
    axis.plot(shown["mean_confidence"], shown["observed_frequency"], "-", color="black", linewidth=2,
              label=f"pooled over {len(runs)} run(s)")
    axis.scatter(shown["mean_confidence"], shown["observed_frequency"], s=sizes, color="black", zorder=3)
    what = "top-label confidence" if multi else "predicted probability of the positive class"
    axis.set_ylabel("fraction correct" if multi else "observed fraction positive")
    axis.set_xlim(0, 1)
    axis.set_ylim(-0.02, 1.02)
    axis.set_title(f"reliability diagram: {label} ({bins} bins)", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="upper left")
    counts_axis.bar((pooled["low"] + pooled["high"]) / 2, pooled["count"], width=1 / bins * 0.9,
                    color="C0")
    counts_axis.set_xlabel(what)
    counts_axis.set_ylabel("images (pooled)")
    counts_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    counts_axis.grid(alpha=0.3)
    return figure


def plot_reliability_diagram(label: str, runs, bins: int, path: Path) -> Path | None:
    figure = draw_reliability_diagram(label, runs, bins)
    return None if figure is None else save_figure(figure, path)


def slug(text: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", str(text)).strip("_").lower() or "arm"


def _colours(n: int) -> list:
    return [plt.get_cmap("tab10")(i % 10) for i in range(n)]
