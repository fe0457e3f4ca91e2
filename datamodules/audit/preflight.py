"""The quick part of the data audit that every training run does before fitting.

It reads every train/val/test file once (no decoding; unchanged files are remembered in the
cache folder, so the jobs of a sweep read them once) and stops the run with one
sentence when

* a file is zero bytes, not an image or truncated, unless ``data.checks.skip_unreadable=true``
  (those files are then left out, marked ``skipped`` in split.csv);
* the same bytes are in two of train/val/test, or a patient has images in two of them
  although ``data.split.group_by_patient=true``, unless ``data.checks.allow_leakage=true``.

With ``group_by_patient=false`` (the papers' image-level split) patients in several
splits are the user's explicit choice: they are counted, not stopped. What was skipped
or allowed, and whether patient leakage was possible, goes to results.json (``data``).
"""

from __future__ import annotations

import logging

from medrepro.core.errors import DataError
from medrepro.core.records import SPLITS
from medrepro.datamodules.audit.data_audit import (
    exact_duplicates,
    file_problems,
    inspect_manifest,
    patient_ids_known,
    patients_in_several_splits,
)

log = logging.getLogger(__name__)
AUDIT_HINT = "python audit.py data=<the same data options>"


def check_before_training(datamodule) -> dict:
    """Run the checks on ``datamodule.manifest`` (after ``setup``); return the facts for
    results.json and store them as ``datamodule.data_checks``."""
    manifest = datamodule.manifest
    used = manifest[manifest["split"].isin(SPLITS)]
    table = inspect_manifest(used, quick=True, store_dir=datamodule.cache.dir)
    checks: dict = {}

    problems = file_problems(table)
    if problems:
        if not datamodule.checks.skip_unreadable:
            raise DataError(_unreadable_sentence(problems))
        log.warning("leaving out %d unreadable file(s) (data.checks.skip_unreadable=true)", len(problems))
        datamodule.exclude([p["path"] for p in problems])
        checks["skipped_unreadable"] = problems
        table = table[table["problem"].isna()]

    duplicates = [g for g in exact_duplicates(table) if g["cross_split"]]
    patients = patients_in_several_splits(datamodule.manifest)
    grouped = bool(datamodule.split_settings.get("group_by_patient", False))
    leaks = {}
    if duplicates:
        leaks["identical_files_across_splits"] = duplicates
    if patients and grouped:
        leaks["patients_in_several_splits"] = patients
    if leaks:
        if not datamodule.checks.allow_leakage:
            raise DataError(_leakage_sentence(duplicates, patients if grouped else []))
        log.warning("training despite cross-split leakage (data.checks.allow_leakage=true)")
        checks["allowed_leakage"] = leaks
    if patients and not grouped:
        log.warning("%d patients have images in more than one split (image-level split)",
                    len(patients))

    known = patient_ids_known(datamodule.manifest)
    checks["patients_in_several_splits"] = len(patients) if known else None
    checks["patient_leakage_possible"] = True if patients else (False if known else None)
    datamodule.data_checks = checks
    return checks


def _unreadable_sentence(problems: list[dict]) -> str:
    first = problems[0]
    what = (
        f"Cannot read image {first['path']} ({first['problem']})"
        if len(problems) == 1
        else f"Cannot read {len(problems)} images, e.g. {first['path']} ({first['problem']})"
    )
    it = "it" if len(problems) == 1 else "them"
    return (
        f"{what}; replace or delete {it} ({AUDIT_HINT} lists every such file), or set "
        f"data.checks.skip_unreadable=true to train without {it}."
    )


def _leakage_sentence(duplicates: list[dict], patients: list[dict]) -> str:
    parts = []
    if duplicates:
        files = duplicates[0]["files"]
        parts.append(
            f"{len(duplicates)} identical file(s) are in more than one split "
            f"(e.g. {files[0]['path']} in {files[0]['split']} and {files[1]['path']} "
            f"in {files[1]['split']})"
        )
    if patients:
        example = patients[0]
        parts.append(
            f"{len(patients)} patient(s) have images in more than one split (e.g. "
            f"{example['patient_id']} in {', '.join(example['images_per_split'])})"
        )
    return (
        f"Cross-split leakage: {' and '.join(parts)}; remove the duplicates or change the "
        f"split ({AUDIT_HINT} lists them all), or set data.checks.allow_leakage=true to train anyway."
    )
