"""Group a sweep's runs into arms (the swept settings other than the seed and the k-fold
fold: seeds and folds are repetitions of an arm, not arms) and pair each arm with the
paper's arm from the experiment's ``reference:`` block."""

from __future__ import annotations

from dataclasses import dataclass, field

from medrepro.jobs.report.runs import Run

NOT_ARM_KEYS = ("seed", "data.split.fold")


@dataclass
class Arm:
    label: str
    settings: dict[str, str]
    runs: list[Run]
    reference: dict = field(default_factory=dict)  # metric -> number or {runs, mean, sd, best}
    value: object = None  # the swept value, for the parameter figure
    order: int = 0  # position of the paper arm in the reference block

    @property
    def completed(self) -> list[Run]:
        return [run for run in self.runs if run.completed]

    @property
    def kfold(self) -> bool:
        """Whether the arm's runs are the folds of a k-fold cross-validation."""
        return any(run.kfold for run in self.runs)


def swept_keys(runs: list[Run]) -> list[str]:
    """Override keys whose value differs between runs, except the seed."""
    keys = []
    for run in runs:
        for key in run.overrides:
            if key not in keys and not key.startswith("hydra.") and key not in NOT_ARM_KEYS:
                keys.append(key)
    return [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]


def group_arms(runs: list[Run], reference: dict | None) -> list[Arm]:
    """Arms in the reference's order (paper arms first), then in job order."""
    keys = swept_keys(runs)
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.overrides.get(k) for k in keys), []).append(run)
    reference_arms = list((reference or {}).get("arms") or [])
    arms = []
    for values, members in groups.items():
        settings = dict(zip(keys, values))
        members.sort(key=lambda r: (_sortable(r.seed), -1 if r.fold is None else r.fold, r.job))
        paper = _matching_arm(members[0], reference_arms)
        label = (paper or {}).get("label") or _label(settings)
        value = (paper or {}).get("value", _single_value(settings))
        arm = Arm(label, settings, members, dict((paper or {}).get("metrics") or {}), value)
        arm.order = reference_arms.index(paper) if paper in reference_arms else len(reference_arms)
        for run in members:
            run.arm = label
        arms.append(arm)
    arms.sort(key=lambda a: (a.order, min(r.job for r in a.runs)))
    return arms


def _matching_arm(run: Run, reference_arms: list[dict]) -> dict | None:
    """The first reference arm whose ``when`` matches the run's config. ``when`` maps
    config keys to a value or a list of accepted values; a list of such mappings matches
    when any of them does."""
    for arm in reference_arms:
        conditions = arm.get("when") or {}
        alternatives = conditions if isinstance(conditions, list) else [conditions]
        if any(
            all(_matches(run.select(key), wanted) for key, wanted in alternative.items())
            for alternative in alternatives
        ):
            return arm
    return None


def _matches(actual, wanted) -> bool:
    if isinstance(wanted, list):
        return any(_matches(actual, option) for option in wanted)
    if actual is None or wanted is None:
        return actual is None and wanted is None
    try:
        return float(actual) == float(wanted)
    except (TypeError, ValueError):
        return str(actual) == str(wanted)


def _label(settings: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "all runs"


def _single_value(settings: dict[str, str]):
    if len(settings) != 1:
        return None
    value = next(iter(settings.values()))
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _sortable(seed):
    try:
        return (0, float(seed))
    except (TypeError, ValueError):
        return (1, str(seed))
