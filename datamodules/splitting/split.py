"""From records and a split configuration to the manifest ``split.csv``.

Modes:

* ``given``: keep the data set's own ``train|val|test`` folders;
* ``counts``: fixed per-class image counts per split, as the papers give them
  (``{train: {normal: 226, cardiomegaly: 250}, val: {...}, test: {...}}``); images not
  asked for are marked ``unused``;
* ``ratios``: per-class fractions (``{train: 0.7, val: 0.15, test: 0.15}``). Of a class
  of ``n`` images, val and test each get ``fraction * n`` rounded to the nearest whole
  number (an exact half to the even number), computed exactly from the fractions' decimal
  digits, and train gets the rest. So every image is used, val and test are within half
  an image of their share and train within one (13 images at 0.7/0.15/0.15: 1.95 -> 2
  each for val and test, 9 for train; 30 images: 4.5 -> 4, 22 for train);
* ``paper``: the published study's own split, which a data set's config states in
  ``split.paper`` as ``{counts: {...}}`` or ``{ratios: {...}}``; all images are pooled
  and re-split to it (Kaggle pneumonia: studies 3 and 4's 790/2,140, 593/1,833, 200/300);
* ``kfold``: k-fold cross-validation (``folds``, ``fold``): the test split that ``ratios``
  makes is held out, and the other images are partitioned into ``folds`` stratified,
  grouped folds, of which ``fold`` is val and the rest train
  (:mod:`medrepro.datamodules.splitting.kfold`).

``counts``, ``ratios`` and ``kfold`` are stratified (targets are set per class) and seeded. Images
that must not be separated form one group: with ``group_by_patient`` all images of a
patient, and with ``group_duplicates`` (the default, in every mode) the copies of one image
that ``links`` names (identical bytes or pixels, confirmed near duplicates: see
:mod:`medrepro.datamodules.audit.duplicate_relation`), transitively, so that no patient and
no image is seen in training and in evaluation. Counts are then met as closely as whole
groups allow; the difference per split and class is logged and kept in the manifest's
``attrs["shortfall"]``. scikit-learn's splitters do k-fold or approximate proportions, not
fixed per-class counts over groups, so the assignment is a small seeded greedy fill: groups
are visited in random order, largest first, and each goes to the split whose per-class
shortfall it fills best. In ``given`` mode a group whose copies lie in two of the data
set's own folders is moved whole to the folder that holds most of it (ties: the first of
train, val, test); ``attrs["moved"]`` lists the files moved.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from fractions import Fraction

import numpy as np
import pandas as pd

from medrepro.core.errors import ConfigError, DataError
from medrepro.core.records import SPLITS, ImageRecord
from medrepro.datamodules.audit.duplicate_relation import component_labels
from medrepro.datamodules.splitting.kfold import KFOLD, assign_folds, check_fold_settings

log = logging.getLogger(__name__)
MODES = ("given", "counts", "ratios", "paper", KFOLD)
UNUSED = "unused"
MANIFEST_COLUMNS = ["path", "label", "patient_id", "split"]


def make_split(
    records: Sequence[ImageRecord],
    class_names: Sequence[str],
    mode: str = "ratios",
    counts: Mapping[str, Mapping[str, int]] | None = None,
    ratios: Mapping[str, float] | None = None,
    group_by_patient: bool = False,
    seed: int = 0,
    paper: Mapping | None = None,
    group_duplicates: bool = True,
    links: Sequence[tuple[str, str]] = (),
    folds: int = 5,
    fold: int | None = None,
) -> pd.DataFrame:
    """Assign every record to ``train``, ``val``, ``test`` (or ``unused``).

    With ``ratios``, val and test get ``fraction * n`` images of each class of ``n``,
    rounded to the nearest whole number (an exact half to the even one), and train the
    rest; the module docstring has examples. With ``kfold``, the test split is the one
    ``ratios`` makes, and ``fold`` (0 to ``folds - 1``) of the stratified, grouped folds
    of the other images is val."""
    if mode not in MODES:
        raise ConfigError(f"data.split.mode must be one of {', '.join(MODES)}, not '{mode}'.")
    check_fold_settings(mode, folds, fold)
    published = mode == "paper"
    if published:
        mode, counts, ratios = _paper_split(paper)
    frame = pd.DataFrame(
        {
            "path": [r.path for r in records],
            "label": [r.label for r in records],
            "patient_id": [r.patient_id for r in records],
            "given_split": [r.given_split for r in records],
        }
    ).sort_values("path", ignore_index=True)
    groups = _group_keys(frame, group_by_patient, links if group_duplicates else ())
    shortfall: list[dict] = []
    moved: list[str] = []
    if mode == "given":
        frame["split"], moved_rows = _keep_given_groups(_given_splits(frame), groups)
        moved = frame.loc[moved_rows, "path"].tolist()
    else:
        per_class = frame["label"].value_counts().to_dict()
        try:
            targets = (
                _targets_from_counts(counts, class_names, per_class)
                if mode == "counts"
                else _targets_from_ratios(ratios, class_names, per_class)
            )
        except DataError as error:
            if not published:
                raise
            raise DataError(
                f"{str(error).split(';')[0]}: data.split.mode=paper needs the whole published "
                "data set; point data.root at it or use data.split.mode=ratios."
            ) from None
        frame["split"] = _assign_groups(
            frame["label"], groups, targets, class_names, seed, allow_unused=mode == "counts"
        )
        if mode == KFOLD:  # only the test split is a target: the folds share the rest
            test = (frame["split"] == "test").to_numpy()
            frame["split"] = assign_folds(frame["label"], groups, test, folds, fold, seed)
            targets = {"test": targets["test"]}
        shortfall = _shortfall(frame, targets, class_names)
    manifest = frame[MANIFEST_COLUMNS].copy()
    manifest.attrs["shortfall"] = shortfall
    manifest.attrs["moved"] = moved
    return manifest


def split_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images per split (rows) and class (columns)."""
    used = manifest[manifest["split"] != UNUSED]
    table = pd.crosstab(used["split"], used["label"])
    return table.reindex([s for s in SPLITS if s in table.index])


def _paper_split(paper: Mapping | None) -> tuple[str, Mapping | None, Mapping | None]:
    """``(mode, counts, ratios)`` of the published split in ``data.split.paper``."""
    paper = dict(paper or {})
    if paper.get("counts"):
        return "counts", paper["counts"], None
    if paper.get("ratios"):
        return "ratios", None, paper["ratios"]
    raise ConfigError(
        "data.split.mode=paper needs the study's split in data.split.paper ({counts: ...} or "
        "{ratios: ...}); this data set's config has none, so use mode=counts or ratios."
    )


def _given_splits(frame: pd.DataFrame) -> pd.Series:
    if frame["given_split"].isna().any():
        raise ConfigError(
            "data.split.mode=given needs train/, val/ and test/ folders in data.root; "
            "this data set has none, so use data.split.mode=ratios or counts."
        )
    missing = [s for s in SPLITS if s not in set(frame["given_split"])]
    if missing:
        raise DataError(
            f"data.split.mode=given but data.root has no {', '.join(missing)} folder; add it "
            "or use data.split.mode=ratios to re-split all images."
        )
    return frame["given_split"]


def _targets_from_counts(counts, class_names, per_class) -> dict[str, dict[str, int]]:
    if not counts:
        raise ConfigError("data.split.mode=counts needs data.split.counts (per split, per class).")
    targets = {}
    for split in SPLITS:
        given = dict(counts.get(split) or {})
        unknown = set(given) - set(class_names)
        if unknown:
            raise ConfigError(
                f"data.split.counts.{split} names unknown class(es) {', '.join(sorted(unknown))}; "
                f"the classes are {', '.join(class_names)}."
            )
        targets[split] = {c: int(given.get(c, 0)) for c in class_names}
    for name in class_names:
        wanted = sum(targets[s][name] for s in SPLITS)
        available = per_class.get(name, 0)
        if wanted > available:
            raise DataError(
                f"The split counts ask for {wanted} '{name}' images but data.root has only "
                f"{available}; lower data.split.counts or add images."
            )
    return targets


def _targets_from_ratios(ratios, class_names, per_class) -> dict[str, dict[str, int]]:
    """Per class: val and test ``fraction * n`` rounded to the nearest whole number (an
    exact half to the even one), train the rest (see the module docstring)."""
    ratios = dict(ratios or {})
    if set(ratios) - set(SPLITS) or any(float(v) < 0 for v in ratios.values()):
        raise ConfigError("data.split.ratios takes non-negative train, val and test fractions.")
    total = sum(float(v) for v in ratios.values())
    if not np.isclose(total, 1.0, atol=1e-6):
        raise ConfigError(f"data.split.ratios must add up to 1, not {total:g}.")
    targets: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for name in class_names:
        n = per_class.get(name, 0)
        val = _share(ratios.get("val", 0), n)
        test = _share(ratios.get("test", 0), n)
        targets["val"][name], targets["test"][name] = val, test
        targets["train"][name] = n - val - test
    return targets


def _share(fraction: float, n: int) -> int:
    """``fraction * n`` rounded to the nearest integer, an exact half to the even one, in
    exact arithmetic on the fraction as written: in floating point 0.07 * 150 is
    10.500000000000002, which would round up where 0.15 * 30 = 4.5 rounds down."""
    return round(Fraction(str(float(fraction))) * n)


def _group_keys(frame: pd.DataFrame, group_by_patient: bool,
                links: Sequence[tuple[str, str]]) -> pd.Series:
    """One key per row: rows with the same key must go to the same split (connected
    components of the patient ids, when grouping by patient, and of ``links``)."""
    paths = frame["path"].tolist()
    edges = list(links)
    if group_by_patient:
        known = frame[frame["patient_id"].notna()]
        for _, rows in known.groupby("patient_id", sort=False):
            members = rows["path"].tolist()
            edges += [(members[0], other) for other in members[1:]]
    if not edges:
        return frame["path"]
    labels = component_labels(paths, edges)
    first = {}
    for path, label in zip(paths, labels):
        first.setdefault(label, path)  # name each group by its first path
    return pd.Series([first[label] for label in labels], index=frame.index)


def _keep_given_groups(splits: pd.Series, groups: pd.Series) -> tuple[pd.Series, list]:
    """The given splits with every group moved whole to the split holding most of it, and
    the index of each row moved."""
    splits = splits.copy()
    moved = []
    for _, members in splits.groupby(groups, sort=True):
        if members.nunique() < 2:
            continue
        counts = members.value_counts()
        best = max(counts.index, key=lambda s: (counts[s], -SPLITS.index(s)))
        changed = members.index[members != best]
        moved += list(changed)
        splits.loc[changed] = best
    if moved:
        log.warning("%d file(s) moved from their given split to the one that holds their "
                    "copies (data.split.group_duplicates=true)", len(moved))
    return splits, moved


def _assign_groups(labels, groups, targets, class_names, seed, allow_unused) -> list[str]:
    class_index = {c: i for i, c in enumerate(class_names)}
    group_ids = sorted(set(groups))
    member_rows: dict[str, list[int]] = {g: [] for g in group_ids}
    for row, group in enumerate(groups):
        member_rows[group].append(row)
    sizes = np.zeros((len(group_ids), len(class_names)), dtype=np.int64)
    for g, group in enumerate(group_ids):
        for row in member_rows[group]:
            sizes[g, class_index[labels.iloc[row]]] += 1
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(group_ids))
    order = order[np.argsort(-sizes[order].sum(axis=1), kind="stable")]  # largest first
    target = np.array([[targets[s][c] for c in class_names] for s in SPLITS], dtype=np.int64)
    shortfall = target.copy()
    result = [UNUSED] * len(labels)
    for g in order:
        need = sizes[g]
        fill = np.minimum(need, np.maximum(shortfall, 0)).sum(axis=1)
        if fill.max() == 0 and allow_unused:
            continue  # every split that wants these classes is full: leave unused
        relative = (shortfall * (need > 0)).sum(axis=1) / np.maximum((target * (need > 0)).sum(axis=1), 1)
        best = max(range(len(SPLITS)), key=lambda s: (fill[s], relative[s]))
        shortfall[best] -= need
        for row in member_rows[group_ids[g]]:
            result[row] = SPLITS[best]
    return result


def _shortfall(frame: pd.DataFrame, targets, class_names) -> list[dict]:
    """Every split and class whose count differs from its target (logged); ``targets``
    may name only some of the splits."""
    table = split_counts(frame)
    differences = []
    for split in (s for s in SPLITS if s in targets):
        for name in class_names:
            got = int(table.loc[split, name]) if split in table.index and name in table else 0
            if got != targets[split][name]:
                log.warning(
                    "split %s, class %s: %d images instead of %d (whole groups of a patient "
                    "or of copies kept together)", split, name, got, targets[split][name],
                )
                differences.append({"split": split, "class": name, "wanted": targets[split][name],
                                    "got": got})
    return differences
