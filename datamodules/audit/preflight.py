"""The checks that every training run does before fitting.

The data module has inspected every file before splitting (read, hashed and decoded once;
unchanged files are remembered in the cache folder, so the jobs of a sweep read them once)
and found the copies among them. With ``data.cache.enabled=true`` building the cache then
decodes every file through the pre-processing. The run stops with one sentence when

* a file is zero bytes, not an image, truncated, larger than
  ``data.checks.max_image_pixels`` (a possible decompression bomb) or cannot be decoded,
  unless ``data.checks.skip_unreadable=true`` (those files are then left out of the split,
  listed in results.json, and the log says how many);
* copies of one image (identical bytes or pixels, confirmed near duplicates) are in two of
  train/val/test (only possible with ``data.split.group_duplicates=false``), copies carry
  two labels within one split (only with
  ``data.duplicates.exclude_conflicting_labels=false``), or a patient has images in two
  splits although ``data.split.group_by_patient=true``, unless
  ``data.checks.allow_leakage=true``.

With ``group_by_patient=false`` (the papers' image-level split) patients in several
splits are the user's explicit choice: they are counted, not stopped. What was skipped
or allowed, and whether patient leakage was possible, goes to results.json (``data``,
through the data module's ``data_facts()``).
"""

from __future__ import annotations

import logging

import pandas as pd

from medrepro.core.errors import DataError
from medrepro.core.records import SPLITS
from medrepro.datamodules.audit.data_audit import (
    file_problems,
    group_entries,
    patient_ids_known,
    patients_in_several_splits,
)
from medrepro.datamodules.audit.file_inspection import TOO_LARGE, UNREADABLE, decoding_problem
from medrepro.datamodules.transforms.image_reader import (
    ImageTooLarge,
    pixels_in_bomb_error,
    too_large_sentence,
)

log = logging.getLogger(__name__)
AUDIT_HINT = "python audit.py data=<the same data options>"
SKIP_SETTING = "data.checks.skip_unreadable=true"


def check_before_training(datamodule) -> dict:
    """Run the checks on ``datamodule.manifest`` (after ``setup``); return the facts for
    results.json and store them as ``datamodule.data_checks``."""
    limit = datamodule.checks.pixel_limit
    used = _used(datamodule.manifest)
    facts = datamodule.file_table.drop(columns=["label", "patient_id", "split"])
    table = used.merge(facts, on="path", how="left", validate="one_to_one")
    checks: dict = {}

    skipped = _leave_out(datamodule, file_problems(table), limit)
    table = table[table["problem"].isna()]
    checks.update(_leakage(datamodule, table))
    skipped += _leave_out(datamodule, _decoding_problems(datamodule, limit), limit)
    if skipped:
        log.warning("Skipped %d unreadable file(s) (%s); results.json lists them under "
                    "data.skipped_unreadable.", len(skipped), SKIP_SETTING)
        checks["skipped_unreadable"] = skipped

    patients = patients_in_several_splits(datamodule.manifest)
    known = patient_ids_known(datamodule.manifest)
    checks["patients_in_several_splits"] = len(patients) if known else None
    checks["patient_leakage_possible"] = True if patients else (False if known else None)
    datamodule.data_checks = checks
    return checks


def unreadable_sentence(problems: list[dict], max_pixels: int) -> str:
    """One sentence: which file(s) cannot be read, why, and what to do (a possible
    decompression bomb is named as such, with the setting that allows large images)."""
    bombs = [p for p in problems if p["problem"] == TOO_LARGE]
    first = bombs[0] if bombs else problems[0]
    it = "it" if len(problems) == 1 else "them"
    skip = f"set {SKIP_SETTING} to train without {it}"
    if bombs:
        others = len(problems) - 1
        also = (f" ({others} other file(s) cannot be read either; {AUDIT_HINT} lists them)"
                if others else "")
        size = first.get("size")
        error = ImageTooLarge(first["path"], max_pixels, size=tuple(size) if size else None,
                              pixels=pixels_in_bomb_error(first["detail"]))
        return too_large_sentence(first["path"], error, f"delete {it} or {skip}", also)
    why = first["problem"]
    if why == UNREADABLE:  # the decoder's reason says more
        why = f"{why}: {first['detail']}"
    what = (
        f"Cannot read image {first['path']} ({why})"
        if len(problems) == 1
        else f"Cannot read {len(problems)} images, e.g. {first['path']} ({why})"
    )
    return f"{what}; replace or delete {it} ({AUDIT_HINT} lists every such file), or {skip}."


def _used(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest[manifest["split"].isin(SPLITS)]


def _leave_out(datamodule, problems: list[dict], max_pixels: int) -> list[dict]:
    """Stop on ``problems`` (one sentence), or, with skip_unreadable, leave their files out
    of the split and return them."""
    if not problems:
        return []
    if not datamodule.checks.skip_unreadable:
        raise DataError(unreadable_sentence(problems, max_pixels))
    datamodule.exclude([p["path"] for p in problems])
    return problems


def _decoding_problems(datamodule, max_pixels: int) -> list[dict]:
    """The files that the cache build could not decode through the pre-processing, as
    audit problems (the inspection has decoded every file already; without a cache there is
    nothing more to find)."""
    if not datamodule.cache.enabled:
        return []
    return as_problems(_used(datamodule.manifest), datamodule.open_cache().unreadable)


def as_problems(manifest: pd.DataFrame, reasons: dict[str, str]) -> list[dict]:
    """The rows of ``manifest`` whose files could not be decoded (``reasons``: path ->
    reason), as audit problems (path, label, split, problem, detail), in manifest order."""
    return [
        {"path": row.path, "label": row.label, "split": row.split,
         "problem": decoding_problem(reasons[row.path]), "detail": reasons[row.path]}
        for row in manifest.itertuples() if row.path in reasons
    ]


def _leakage(datamodule, table: pd.DataFrame) -> dict:
    """Stop on copies in two splits and on copies under two labels in one split (one
    sentence), unless allowed; return what was allowed (``allowed_leakage``)."""
    groups = group_entries(table, datamodule.duplicates.groups(table["path"].tolist()))
    duplicates = [g for g in groups if g["cross_split"]]
    conflicts = [g for g in groups if g["labels_differ"] and not g["cross_split"]]
    patients = patients_in_several_splits(datamodule.manifest)
    grouped = bool(datamodule.split_settings.get("group_by_patient", False))
    leaks = {}
    if duplicates:
        leaks["identical_files_across_splits"] = duplicates
    if conflicts:
        leaks["identical_files_with_different_labels"] = conflicts
    if patients and grouped:
        leaks["patients_in_several_splits"] = patients
    if patients and not grouped:
        log.warning("%d patients have images in more than one split (image-level split)",
                    len(patients))
    if not leaks:
        return {}
    if not datamodule.checks.allow_leakage:
        raise DataError(leakage_sentence(duplicates, conflicts, patients if grouped else []))
    log.warning("Training despite leakage or conflicting labels (data.checks.allow_leakage=true)")
    return {"allowed_leakage": leaks}


def leakage_sentence(duplicates: list[dict], conflicts: list[dict], patients: list[dict]) -> str:
    """One sentence: how many files and groups of identical files are in several splits or
    under several labels, how many patients are in several splits, an example of each
    (two files that really are in two splits, or under two labels), and what to do."""
    parts = []
    if duplicates:
        a, b = _differing_pair(duplicates[0]["files"], "split")
        parts.append(
            f"{_files_in_groups(duplicates)} are in more than one split "
            f"(e.g. {a['path']} in {a['split']} and {b['path']} in {b['split']})"
        )
    if conflicts:
        a, b = _differing_pair(conflicts[0]["files"], "label")
        parts.append(
            f"{_files_in_groups(conflicts)} have different labels in the same split "
            f"(e.g. {a['path']} labelled {a['label']} and {b['path']} labelled {b['label']}, "
            f"both in {a['split']})"
        )
    if patients:
        example = patients[0]
        parts.append(
            f"{len(patients)} patient(s) have images in more than one split (e.g. "
            f"{example['patient_id']} in {', '.join(example['images_per_split'])})"
        )
    kind = " and ".join(k for k, found in (("Cross-split leakage", duplicates or patients),
                                           ("conflicting labels", conflicts)) if found)
    fixes = []
    if duplicates:
        fixes.append("set data.split.group_duplicates=true to keep copies in one split")
    if conflicts:
        fixes.append("set data.duplicates.exclude_conflicting_labels=true to leave them out")
    if patients:
        fixes.append("change the split")
    return (
        f"{kind[0].upper()}{kind[1:]}: {' and '.join(parts)}; {', or '.join(fixes)} "
        f"({AUDIT_HINT} lists them all), or set data.checks.allow_leakage=true to train anyway."
    )


def _files_in_groups(groups: list[dict]) -> str:
    files = sum(len(g["files"]) for g in groups)
    return f"{files} identical or near-identical files ({len(groups)} group(s) of copies)"


def _differing_pair(files: list[dict], key: str) -> tuple[dict, dict]:
    """The first file and the first other file whose ``key`` (split or label) differs."""
    first = files[0]
    return first, next(f for f in files[1:] if f[key] != first[key])
