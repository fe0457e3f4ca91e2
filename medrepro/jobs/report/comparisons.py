"""Do the arms differ? Welch's test on the runs' values (ours and the paper's published
runs), the paired DeLong test of two arms tested on the same images (per seed, and on the
seed-averaged probabilities), and Holm's correction with more than two arms."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from medrepro.jobs.report.arms import Arm
from medrepro.jobs.report.formatting import is_rate, show, show_p
from medrepro.jobs.report.statistics import SIGNIFICANCE, Comparison, mean_sd, welch
from medrepro.jobs.report.test_sets import ArmTestSet, RunTest
from medrepro.statistics.delong import PAIRED_DELONG_METHOD, paired_delong_test
from medrepro.statistics.multiple_testing import holm, holm_method


def welch_lines(arms: list[Arm], main: str) -> list[str]:
    """Welch's test between every two arms on the runs' ``main`` metric, Holm-adjusted with
    more than two arms; the same on the paper's published runs; what the paper's own runs
    can and cannot separate."""
    pairs = list(itertools.combinations(arms, 2))
    correction = (f" With {len(arms)} arms, {holm_method(len(pairs))} The verdict follows the "
                  "adjusted p." if len(arms) > 2 else " Two arms: one comparison, no correction.")
    lines = [(f"Test: Welch's two-sample t-test (unequal variances) on the runs' {main}, "
              f"two-sided, each pair of arms, p < 0.05 called a difference.{correction} With 3 "
              "runs per arm only large, consistent gaps reach it."), ""]
    if len(arms) < 2:
        values = [r.metric(main) for r in arms[0].completed] if arms else []
        mean, sd = mean_sd(values)
        spread = (f"{main} {show(main, mean)} ± {show(main, sd)} over {len(values)} runs"
                  if sd is not None else f"{len(values)} completed run(s)")
        return [(f"One arm only ({spread}): there is nothing to compare. The SD is the "
                 "run-to-run noise any future change must beat.")]
    ours = [welch(a.label, [r.metric(main) for r in a.completed],
                  b.label, [r.metric(main) for r in b.completed]) for a, b in pairs]
    lines += [f"- {s}" for s in _sentences(ours, main, len(arms) > 2)]
    paper = [paper_welch(a, b, main) for a, b in pairs]
    tested = [c for c in paper if c is not None]
    if tested:
        lines += ["", f"The same test on the paper's own published runs of {main}:", ""]
        lines += [f"- {s}" for s in _sentences(tested, main, len(tested) > 1)]
        lines += ["", paper_separation(tested, main)]
    elif any(a.reference.get(main) is not None for a in arms):
        lines += ["", (f"The paper gives one {main} per arm, without its runs or their SD and "
                       "number: its data cannot say whether its arms differ by more than "
                       "run-to-run noise.")]
    return lines


def paper_sample(reference) -> tuple[float | None, float | None, int | None]:
    """The paper's (mean, SD, number of runs) of a metric: from its listed runs, or from
    ``mean``, ``sd`` and ``n`` where it gives those; ``None`` where unknown."""
    if not isinstance(reference, dict):
        return None, None, None
    runs = [float(v) for v in reference.get("runs") or []]
    if runs:
        mean, sd = mean_sd(runs)
        return mean, sd, len(runs)
    n = reference.get("n")
    if "mean" in reference and reference.get("sd") is not None and n:
        return float(reference["mean"]), float(reference["sd"]), int(n)
    return None, None, None


def paper_welch(first: Arm, second: Arm, metric: str) -> Comparison | None:
    """Welch's test on the paper's own runs of two arms (from their values, or from mean,
    SD and n); ``None`` where the paper gives fewer than 2 runs of either arm."""
    (m1, s1, n1), (m2, s2, n2) = (paper_sample(arm.reference.get(metric)) for arm in (first, second))
    if not n1 or not n2 or n1 < 2 or n2 < 2:
        return None
    p_value = None
    if s1 > 0 or s2 > 0:
        p_value = float(stats.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False).pvalue)
    return Comparison(first.label, second.label, m1 - m2, p_value, n1, n2)


def paper_separation(comparisons: list[Comparison], metric: str) -> str:
    """In words: which of the paper's arms its own runs can and cannot separate."""
    adjusted = _adjusted(comparisons, len(comparisons) > 1)
    can, cannot = [], []
    for comparison, p in zip(comparisons, adjusted):
        text = (f"{comparison.first} from {comparison.second} ({show_p(p)}, "
                f"{comparison.n_first} vs {comparison.n_second} runs)")
        (can if p is not None and p < SIGNIFICANCE else cannot).append(text)
    adjusted_word = " Holm-adjusted" if len(comparisons) > 1 else ""
    parts = []
    if can:
        parts.append(f"separate {'; '.join(can)}")
    if cannot:
        parts.append(f"cannot separate {'; '.join(cannot)}")
    return (f"**What the paper's own data can tell ({metric}, Welch{adjusted_word}):** the "
            f"paper's own runs {', and '.join(parts)}.")


def _adjusted(comparisons: list[Comparison], correct: bool) -> list[float | None]:
    raw = [math.nan if c.p_value is None else c.p_value for c in comparisons]
    values = holm(raw) if correct else np.asarray(raw, dtype=float)
    return [None if not math.isfinite(v) else float(v) for v in values]


def _sentences(comparisons: list[Comparison], metric: str, correct: bool) -> list[str]:
    adjusted = _adjusted(comparisons, correct)
    return [_sentence(c, metric, p if correct else None) for c, p in zip(comparisons, adjusted)]


def _sentence(comparison: Comparison, metric: str, adjusted: float | None) -> str:
    gap = show(metric, comparison.difference, signed=True)
    unit = " points" if is_rate(metric) else ""
    head = f"{comparison.first} vs {comparison.second}: {gap}{unit} {metric}"
    if comparison.p_value is None:
        return (f"{head}: cannot be tested ({comparison.n_first} vs {comparison.n_second} runs; "
                "the test needs at least 2 completed runs per arm and some spread).")
    decisive = comparison.p_value if adjusted is None else adjusted
    verdict = ("larger than run-to-run noise" if decisive < SIGNIFICANCE
               else f"not distinguishable from run-to-run noise with {comparison.n_first} vs "
                    f"{comparison.n_second} runs")
    holm_text = "" if adjusted is None else f"; Holm-adjusted {show_p(adjusted)}"
    return f"{head} (Welch {show_p(comparison.p_value)}{holm_text}): {verdict}."


# --------------------------------------------------------------------------- paired DeLong


@dataclass
class PairedRow:
    first: str
    second: str
    which: str  # "seed 0", "seed 0, fold 1", "seed-averaged (3 vs 3 runs)"
    auc_first: float
    auc_second: float
    difference: float
    z: float
    p_value: float
    adjusted: float | None = None


def paired_delong_lines(arms: list[Arm], test_sets: dict[str, ArmTestSet], binary: bool) -> list[str]:
    """The paired DeLong test of every two arms tested on the same images: per seed (runs
    of equal seed, and fold in k-fold) and on the seed-averaged positive-class probabilities
    (each image's mean over the arm's runs, aligned by path); Holm-adjusted within each
    family (one seed, or the averages) with more than two arms."""
    if len(arms) < 2:
        return []
    if not binary:
        return [("The paired DeLong test compares two-class AUROCs; this task has more classes, "
                 "so the arms are compared by Welch's test above only.")]
    rows, notes = [], []
    for first, second in itertools.combinations(arms, 2):
        a, b = test_sets.get(first.label), test_sets.get(second.label)
        found = _paired_rows(first.label, a, second.label, b) if a and b else []
        if not found:
            notes.append(f"- {first.label} vs {second.label}: the paired test does not apply: "
                         "no runs of the two arms were tested on the same images (e.g. each "
                         "seed drew its own split); Welch's test across seeds above compares "
                         "them.")
        rows += found
    correct = len(arms) > 2
    if correct:
        for family in dict.fromkeys(r.which.split(" (")[0] for r in rows):
            members = [r for r in rows if r.which.split(" (")[0] == family]
            for row, p in zip(members, holm([r.p_value for r in members])):
                row.adjusted = None if not math.isfinite(p) else float(p)
    families = len({r.which.split(" (")[0] for r in rows})
    method = PAIRED_DELONG_METHOD
    if correct:
        method += (f" With {len(arms)} arms the p-values are adjusted by Holm's method within "
                   f"each family of comparisons (each seed, and the seed-averaged "
                   f"probabilities: {families} families of up to "
                   f"{len(arms) * (len(arms) - 1) // 2} comparisons).")
    lines = [method, ""]
    if rows:
        lines += ["| arms | runs compared | AUROC first | AUROC second | first − second | z | p |"
                  + (" Holm p |" if correct else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if correct else "")]
        for r in rows:
            cells = [f"{r.first} vs {r.second}", r.which, f"{r.auc_first:.4f}",
                     f"{r.auc_second:.4f}", f"{r.difference:+.4f}",
                     "–" if not math.isfinite(r.z) else f"{r.z:+.2f}",
                     show_p(r.p_value).removeprefix("p ").removeprefix("= ")]
            if correct:
                cells.append(show_p(r.adjusted).removeprefix("p ").removeprefix("= "))
            lines.append("| " + " | ".join(cells) + " |")
    return lines + ([""] if rows and notes else []) + notes


def _paired_rows(first: str, a: ArmTestSet, second: str, b: ArmTestSet) -> list[PairedRow]:
    rows = []
    by_key_b = {_key(t): t for t in b.runs}
    for test in a.runs:
        other = by_key_b.get(_key(test))
        if other is None or set(other.paths) != set(test.paths) or len(other.paths) != len(test.paths):
            continue
        scores = _aligned(other, test.paths)
        rows.append(_paired(first, second, _which(test), test.truth == 1, test.positive_scores, scores))
    if a.shared and b.shared and a.runs and b.runs and len(a.runs) + len(b.runs) > 2:
        paths = a.runs[0].paths
        if set(b.runs[0].paths) == set(paths) and len(b.runs[0].paths) == len(paths):
            mean_a = np.mean([t.positive_scores for t in a.runs], axis=0)
            mean_b = np.mean([_aligned(t, paths) for t in b.runs], axis=0)
            which = f"seed-averaged ({len(a.runs)} vs {len(b.runs)} runs)"
            rows.append(_paired(first, second, which, a.runs[0].truth == 1, mean_a, mean_b))
    return rows


def _paired(first, second, which, truth, scores_a, scores_b) -> PairedRow:
    result = paired_delong_test(truth, scores_a, scores_b)
    return PairedRow(first, second, which, result.auc_a, result.auc_b, result.difference,
                     result.z, result.p_value)


def _aligned(test: RunTest, paths: list[str]) -> np.ndarray:
    position = {path: i for i, path in enumerate(test.paths)}
    return test.positive_scores[[position[p] for p in paths]]


def _key(test: RunTest):
    return (str(test.run.seed), test.run.fold)


def _which(test: RunTest) -> str:
    fold = "" if test.run.fold is None else f", fold {test.run.fold}"
    return f"seed {test.run.seed}{fold}"
