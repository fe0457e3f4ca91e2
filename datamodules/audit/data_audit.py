"""The data audit: what is in a data set and what would inflate or break a study on it.

From the split manifest (path, label, patient_id, split; ``unused`` rows included) it finds:

* images per split and class;
* zero-byte, non-image, truncated and unreadable files, and images of more pixels than
  ``data.checks.max_image_pixels`` (possible decompression bombs)
  (:mod:`medrepro.datamodules.audit.file_inspection`);
* exact duplicates (same SHA-256 of the bytes) and near duplicates (perceptual hashes at
  most ``near_distance`` bits apart), each flagged when it spans two of train/val/test
  (leakage) or two classes (a labelling conflict);
* patients with images in more than one of train/val/test;
* image formats, modes, bit depths and sizes;
* files under the data folder that the data source did not take.

``quick=True`` is the part training runs before fitting (no decoding, no near
duplicates); ``python audit.py`` runs it all. :mod:`medrepro.datamodules.audit.audit_report` renders it.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from medrepro.core.records import SPLITS
from medrepro.datamodules.audit.file_facts_store import FileFactsStore, file_key
from medrepro.datamodules.audit.file_inspection import (
    TOO_LARGE,
    FileFacts,
    inspect_file,
    size_problem,
)
from medrepro.datamodules.audit.perceptual_hash import near_duplicate_pairs
from medrepro.datamodules.sources.published_layout import IGNORED_FOLDERS
from medrepro.datamodules.splitting.split import UNUSED
from medrepro.datamodules.transforms.image_reader import DEFAULT_MAX_IMAGE_PIXELS

NEAR_DISTANCE = 4


def inspect_manifest(
    manifest: pd.DataFrame, quick: bool, workers: int | None = None,
    store_dir: str | Path | None = None, max_pixels: int | None = None,
    store: FileFactsStore | None = None,
) -> pd.DataFrame:
    """The manifest with one column per :class:`FileFacts` field, in the same row order.

    With ``store_dir`` or an open ``store`` (quick inspections only), facts of unchanged
    files are taken from the :class:`FileFactsStore` there instead of reading the files
    again. Images of more
    than ``max_pixels`` pixels get the problem ``possible decompression bomb``."""
    workers = workers or min(8, os.cpu_count() or 1)
    max_pixels = int(max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    paths = manifest["path"].tolist()
    if store is None and store_dir:
        store = FileFactsStore(store_dir)
    store = store if quick else None
    keys = [file_key(p) for p in paths] if store else []
    known = store.facts if store else {}
    missing = [p for p, k in zip(paths, keys) if k not in known] if store else paths

    def inspect(path: str) -> dict:
        return inspect_file(path, quick=quick, max_pixels=max_pixels).as_dict()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = dict(zip(missing, pool.map(inspect, missing)))
    if store:
        remembered = {k: found[p] for p, k in zip(paths, keys)
                      if p in found and found[p]["problem"] != TOO_LARGE}  # depends on the limit
        if remembered:
            store.facts.update(remembered)
            store.save()  # skipped where the folder cannot be written
        rows = [found[p] if p in found else dict(store.facts[k]) for p, k in zip(paths, keys)]
        rows = [_with_size_check(row, max_pixels) for row in rows]  # facts remembered under another limit
    else:
        rows = [found[p] for p in paths]
    columns = pd.DataFrame(rows, index=manifest.index).drop(columns="path")
    return pd.concat([manifest, columns], axis=1)


def _with_size_check(row: dict, max_pixels: int) -> dict:
    facts = FileFacts(**row)
    size_problem(facts, max_pixels)
    return facts.as_dict()


def file_problems(table: pd.DataFrame) -> list[dict]:
    """Every file with a problem: path, label, split, problem, detail, and for an image
    too large to read (:data:`TOO_LARGE`) its ``size`` (``[width, height]``) where the
    header said it."""
    bad = table[table["problem"].notna()]
    return [_file_entry(row) | {"problem": row["problem"], "detail": row["detail"]}
            | ({"size": _size(row)} if row["problem"] == TOO_LARGE else {})
            for _, row in bad.iterrows()]


def _size(row: pd.Series) -> list[int] | None:
    width, height = row.get("width"), row.get("height")
    known = all(pd.notna(v) and v for v in (width, height))
    return [int(width), int(height)] if known else None


def exact_duplicates(table: pd.DataFrame) -> list[dict]:
    """Groups of two or more files with the same bytes."""
    hashed = table[table["sha256"].notna()]
    groups = []
    for sha, rows in hashed.groupby("sha256", sort=True):
        if len(rows) > 1:
            groups.append(_group(rows) | {"sha256": sha})
    return groups


def near_duplicates(table: pd.DataFrame, max_distance: int = NEAR_DISTANCE) -> list[dict]:
    """Pairs of different files whose perceptual hashes differ in at most ``max_distance``
    bits (exact duplicates are left to :func:`exact_duplicates`)."""
    hashed = table[table["phash"].notna()].reset_index(drop=True)
    if len(hashed) < 2:
        return []
    hashes = np.array([int(h) for h in hashed["phash"]], dtype=np.uint64)
    pairs = []
    for i, j, distance in near_duplicate_pairs(hashes, max_distance):
        rows = hashed.iloc[[i, j]]
        if rows["sha256"].nunique() == 1:
            continue
        pairs.append(_group(rows) | {"distance": distance})
    return sorted(pairs, key=lambda p: (not p["cross_split"], p["distance"], p["files"][0]["path"]))


def patients_in_several_splits(manifest: pd.DataFrame) -> list[dict]:
    used = manifest[manifest["split"].isin(SPLITS) & manifest["patient_id"].notna()]
    spread = used.groupby("patient_id")["split"].agg(lambda s: dict(Counter(s)))
    return [{"patient_id": pid, "images_per_split": splits}
            for pid, splits in spread.items() if len(splits) > 1]


def patient_ids_known(manifest: pd.DataFrame) -> bool:
    used = manifest[manifest["split"].isin(SPLITS)]
    return bool(len(used)) and bool(used["patient_id"].notna().all())


def split_class_counts(manifest: pd.DataFrame) -> dict:
    table = pd.crosstab(manifest["split"], manifest["label"])
    order = [s for s in (*SPLITS, UNUSED) if s in table.index]
    order += [s for s in table.index if s not in order]
    return {split: {k: int(v) for k, v in table.loc[split].items()} for split in order}


def image_properties(table: pd.DataFrame) -> dict:
    good = table[table["problem"].isna()]

    def counts(column: str) -> dict:
        return {str(k): int(v) for k, v in good[column].value_counts(dropna=False).items()}

    def spread(column: str) -> dict:
        values = good[column].dropna().astype(int)
        if values.empty:
            return {}
        return {"min": int(values.min()), "median": float(values.median()), "max": int(values.max())}

    return {
        "formats": counts("format"),
        "modes": counts("mode"),
        "bit_depths": counts("bit_depth"),
        "width": spread("width"),
        "height": spread("height"),
        "bytes": spread("bytes"),
        "extension_differs_from_format": _extension_mismatches(good),
    }


def files_not_taken(paths: list[str], limit: int = 20) -> dict:
    """Files below the records' common folder that the source did not take."""
    if not paths:
        return {"count": 0, "hidden_or_macosx": 0, "by_extension": {}, "examples": []}
    taken = {os.path.abspath(p) for p in paths}
    base = Path(os.path.commonpath(list(taken)))
    base = base if base.is_dir() else base.parent
    other, hidden = [], 0
    for folder, subfolders, files in os.walk(base):
        for name in files:
            path = os.path.abspath(os.path.join(folder, name))
            relative = Path(path).relative_to(base).parts
            if any(part.startswith(".") or part in IGNORED_FOLDERS for part in relative):
                hidden += 1
            elif path not in taken:
                other.append(path)
    extensions = Counter(Path(p).suffix.lower() or "(none)" for p in other)
    return {
        "folder": str(base),
        "count": len(other),
        "hidden_or_macosx": hidden,
        "by_extension": dict(extensions.most_common()),
        "examples": sorted(other)[:limit],
    }


def audit_data(
    manifest: pd.DataFrame,
    quick: bool = False,
    near_distance: int = NEAR_DISTANCE,
    workers: int | None = None,
    max_pixels: int | None = None,
) -> dict:
    """The whole audit as a JSON-ready dict (see the module docstring); images of more
    than ``max_pixels`` pixels are reported as possible decompression bombs."""
    max_pixels = int(max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    table = inspect_manifest(manifest, quick=quick, workers=workers, max_pixels=max_pixels)
    exact = exact_duplicates(table)
    near = [] if quick else near_duplicates(table, near_distance)
    patients = patients_in_several_splits(manifest)
    problems = file_problems(table)
    result = {
        "files": len(table),
        "counts": split_class_counts(manifest),
        "problems": problems,
        "max_image_pixels": max_pixels,
        "exact_duplicates": exact,
        "near_duplicates": near,
        "near_duplicate_max_distance": None if quick else near_distance,
        "patient_ids_known": patient_ids_known(manifest),
        "patients_in_several_splits": patients,
        "image_properties": image_properties(table),
        "files_not_taken": files_not_taken(manifest["path"].tolist()),
    }
    result["summary"] = {
        "files": len(table),
        "problem_files": len(problems),
        "possible_decompression_bombs": sum(p["problem"] == TOO_LARGE for p in problems),
        "exact_duplicate_groups": len(exact),
        "exact_duplicate_groups_across_splits": sum(g["cross_split"] for g in exact),
        "near_duplicate_pairs": None if quick else len(near),
        "near_duplicate_pairs_across_splits": None if quick else sum(p["cross_split"] for p in near),
        "patients_in_several_splits": len(patients) if result["patient_ids_known"] else None,
        "duplicates_with_different_labels": sum(g["labels_differ"] for g in exact + near),
    }
    return result


def _file_entry(row: pd.Series) -> dict:
    return {"path": row["path"], "label": row["label"], "split": row["split"]}


def _group(rows: pd.DataFrame) -> dict:
    splits = set(rows["split"]) & set(SPLITS)
    return {
        "files": [_file_entry(row) for _, row in rows.sort_values("path").iterrows()],
        "cross_split": len(splits) > 1,
        "labels_differ": rows["label"].nunique() > 1,
    }


def _extension_mismatches(good: pd.DataFrame) -> int:
    expected = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
                ".tiff": "TIFF", ".dcm": "DICOM"}
    suffixes = good["path"].map(lambda p: expected.get(Path(p).suffix.lower()))
    return int(((suffixes.notna()) & (suffixes != good["format"])).sum())
