"""k-fold cross-validation with a held-out test set (``data.split.mode=kfold``).

The test split is the one ``data.split.mode=ratios`` makes with the same ratios, seed and
groups (a data set's own ``train|val|test`` folders are ignored, as in ``ratios``, ``counts``
and ``paper``), so every fold of one seed, and a single ``ratios`` run, are tested on the
same images. The remaining groups (all images of a patient with ``group_by_patient``, the
copies of an image with ``group_duplicates``) are partitioned by scikit-learn's
``StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)`` (as scikit-learn
1.8 and later shuffle, with every version: :func:`shuffled_group_codes`); fold ``fold`` is
the validation split and the other folds are the training split. Over ``fold = 0 .. folds-1``
every image outside the test split is validated on exactly once: its validation
predictions (``val_predictions.csv``) are the out-of-fold predictions.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from medrepro.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)
KFOLD = "kfold"


def check_fold_settings(mode: str, folds, fold) -> None:
    """With ``mode=kfold``: ``data.split.folds`` (a whole number, 2 or more) and
    ``data.split.fold`` (a whole number from 0 to ``folds - 1``); in any other mode,
    ``data.split.fold`` must be unset (the run would ignore it). One sentence each."""
    if mode != KFOLD:
        if fold is not None:
            raise ConfigError(
                f"data.split.fold={fold} applies only to data.split.mode=kfold, and the split "
                f"mode is {mode}: add data.split.mode=kfold (or cv=kfold), or drop data.split.fold."
            )
        return
    if not _is_whole(folds) or folds < 2:
        raise ConfigError(
            "data.split.folds must be a whole number of folds, 2 or more, such as 5, "
            f"not {folds!r}."
        )
    if fold is None:
        raise ConfigError(
            f"data.split.mode=kfold needs data.split.fold, the fold validated on (0 to "
            f"{folds - 1}): run every fold with python train.py -m cv=kfold, or one with "
            "data.split.fold=0."
        )
    if not _is_whole(fold) or not 0 <= fold < folds:
        raise ConfigError(
            f"data.split.fold must be a whole number from 0 to {folds - 1} (the folds of "
            f"data.split.folds={folds} are numbered from 0), not {fold!r}."
        )


def assign_folds(labels: pd.Series, groups: pd.Series, test: np.ndarray, folds: int,
                 fold: int, seed: int) -> list[str]:
    """``test`` for the rows of the held-out test set (the boolean mask ``test``), ``val``
    for the rows in fold ``fold`` of the ``StratifiedGroupKFold`` partition of the other
    rows (by ``labels``, within ``groups``), ``train`` for the rest. The partition depends
    on the rows' order, their labels and groups and ``seed``, not on ``fold``."""
    test = np.asarray(test, dtype=bool)
    rest = np.flatnonzero(~test)
    rest_labels, rest_groups = labels.iloc[rest], groups.iloc[rest]
    _check_enough_groups(rest_labels, rest_groups, folds)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=False)
    partition = list(splitter.split(np.zeros(len(rest)), rest_labels.to_numpy(),
                                    shuffled_group_codes(rest_groups.to_numpy(), seed)))
    result = np.where(test, "test", "train").astype(object)
    result[rest[partition[fold][1]]] = "val"
    _warn_missing_classes(rest_labels.iloc[partition[fold][1]], set(rest_labels), fold)
    return result.tolist()


def shuffled_group_codes(groups: np.ndarray, seed: int) -> np.ndarray:
    """Each row's group as a number, the groups numbered in a random order drawn from
    ``seed``: ``StratifiedGroupKFold(shuffle=False)`` on these codes visits the groups in
    the order that ``StratifiedGroupKFold(shuffle=True, random_state=seed)`` of scikit-learn
    1.8 and later does (the groups sorted, then permuted by ``RandomState(seed).shuffle``),
    so the folds are the same with every scikit-learn version; before 1.8 ``shuffle=True``
    permuted the groups' class counts without the groups, which broke the stratification."""
    _, codes = np.unique(groups, return_inverse=True)
    order = np.arange(codes.max() + 1 if len(codes) else 0)
    np.random.RandomState(seed).shuffle(order)
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    return position[codes]


def _check_enough_groups(labels: pd.Series, groups: pd.Series, folds: int) -> None:
    """Every class must have at least ``folds`` groups outside the test split, so that
    every fold can validate on every class."""
    per_class = pd.DataFrame({"label": labels, "group": groups}).groupby("label")["group"].nunique()
    smallest = per_class.idxmin()
    if per_class[smallest] < folds:
        raise DataError(
            f"data.split.folds={folds} needs every class in at least {folds} groups of images "
            "outside the test split (an image with its copies and, with group_by_patient, its "
            f"patient's other images), but '{smallest}' is in only {per_class[smallest]}; lower "
            "data.split.folds or add images."
        )


def _warn_missing_classes(val_labels: pd.Series, classes: set, fold: int) -> None:
    missing = sorted(classes - set(val_labels))
    if missing:
        log.warning("fold %d validates on no image of class(es) %s: the groups did not spread "
                    "over the folds (fewer data.split.folds would)", fold, ", ".join(missing))


def _is_whole(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
