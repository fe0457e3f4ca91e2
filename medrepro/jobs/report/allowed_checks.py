"""What a run was allowed to train despite: ``data.checks.allow_leakage=true`` (copies of
an image in two splits, copies under two labels, patients in several splits) and
``data.checks.skip_unreadable=true`` (files left out), counted from results.json's
``data.allowed_leakage`` / ``data.skipped_unreadable`` and the run's split.csv, for
results.json's ``allowed_checks`` and the top of the run report.
"""

from __future__ import annotations

import pandas as pd

from medrepro.core.records import SPLITS

TRAIN, TEST = "train", "test"
COPIES = "identical_files_across_splits"
CONFLICTS = "identical_files_with_different_labels"
PATIENTS = "patients_in_several_splits"


def allowed_checks(results: dict, split: pd.DataFrame | None = None) -> dict:
    """results.json's ``allowed_checks``: whether each setting was on, and the counts.

    ``test_images_with_copy_in_training``: test images in a group of copies (exact or near)
    that has a file in the training split. ``test_images_of_patients_in_training``: test
    images whose patient (split.csv's ``patient_id``) has an image in training, whatever
    the setting (an image-level split allows it by design); ``None`` without patient ids.
    """
    data = results.get("data") or {}
    config = results.get("config") or {}
    evaluation = results.get("evaluation") or {}
    checks = (((evaluation.get("training_config") or config).get("data") or {}).get("checks") or {})
    leaks = data.get("allowed_leakage") or {}
    copy_groups = leaks.get(COPIES) or []
    return {
        "allow_leakage": {
            "set": bool(checks.get("allow_leakage", False)),
            "test_images_with_copy_in_training": len(tested_copies_of_training_files(copy_groups)),
            "files_across_splits": sum(len(group.get("files") or []) for group in copy_groups),
            "groups_across_splits": len(copy_groups),
            "groups_with_different_labels": len(leaks.get(CONFLICTS) or []),
            PATIENTS: len(leaks.get(PATIENTS) or []),
            "test_images_of_patients_in_training": tested_images_of_training_patients(split),
        },
        "skip_unreadable": {
            "set": bool(checks.get("skip_unreadable", False)),
            "skipped": len(data.get("skipped_unreadable") or []),
        },
    }


def tested_copies_of_training_files(groups: list[dict]) -> set[str]:
    """The test files of the groups of copies that have a file in training."""
    paths = set()
    for group in groups:
        files = group.get("files") or []
        if any(f.get("split") == TRAIN for f in files):
            paths.update(f["path"] for f in files if f.get("split") == TEST)
    return paths


def tested_images_of_training_patients(split: pd.DataFrame | None) -> int | None:
    """Test images whose patient has an image in training (``None`` where split.csv or its
    patient ids are missing: an image without an id is a patient of its own)."""
    if split is None or "patient_id" not in split or not split["patient_id"].notna().any():
        return None
    used = split[split["split"].isin(SPLITS) & split["patient_id"].notna()]
    in_training = set(used.loc[used["split"] == TRAIN, "patient_id"])
    return int((used["split"].eq(TEST) & used["patient_id"].isin(in_training)).sum())
