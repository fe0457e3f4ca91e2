"""The data audit: what is in a data set and what would inflate or break a study on it.

From the split manifest (path, label, patient_id, split; ``unused`` rows included) it finds:

* images per split and class;
* zero-byte, non-image, truncated and unreadable files, and images of more pixels than
  ``data.checks.max_image_pixels`` (possible decompression bombs)
  (:mod:`medrepro.datamodules.audit.file_inspection`);
* copies: exact duplicates (same bytes or same decoded pixels) and near duplicates
  confirmed pixel by pixel (:mod:`medrepro.datamodules.audit.duplicate_relation`, the
  relation the split keeps together), each flagged when it spans two of train/val/test
  (leakage) or two classes (a labelling conflict), and the near-duplicate candidates that
  were rejected, with their similarity;
* patients with images in more than one of train/val/test;
* image formats, modes, bit depths and sizes;
* files under the data folder that the data source did not take.

``quick=True`` reads headers only (no decoding, so identical bytes are the only copies
found); training and ``python audit.py`` run it all. :mod:`medrepro.datamodules.audit.audit_report` renders it.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from medrepro.core.records import SPLITS
from medrepro.datamodules.audit.duplicate_relation import (
    CANDIDATE_DISTANCE,
    DuplicateRelation,
    NearPair,
    find_duplicates,
)
from medrepro.datamodules.audit.file_facts_store import FileFactsStore, file_key
from medrepro.datamodules.audit.file_inspection import (
    TOO_LARGE,
    FileFacts,
    inspect_file,
    size_problem,
)
from medrepro.datamodules.audit.image_similarity import MIN_SIMILARITY
from medrepro.datamodules.sources.published_layout import IGNORED_FOLDERS
from medrepro.datamodules.splitting.split import UNUSED
from medrepro.datamodules.transforms.image_reader import DEFAULT_MAX_IMAGE_PIXELS


def inspect_manifest(
    manifest: pd.DataFrame, quick: bool, workers: int | None = None,
    store_dir: str | Path | None = None, max_pixels: int | None = None,
    store: FileFactsStore | None = None,
) -> pd.DataFrame:
    """The manifest with one column per :class:`FileFacts` field, in the same row order.

    With ``store_dir`` or an open ``store``, facts of unchanged files are taken from the
    :class:`FileFactsStore` there instead of reading the files again (a quick fact does not
    stand in for a full one; files a full inspection decoded are marked decoded). Images of
    more than ``max_pixels`` pixels get the problem ``possible decompression bomb``."""
    workers = workers or min(8, os.cpu_count() or 1)
    max_pixels = int(max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    paths = list(dict.fromkeys(manifest["path"].tolist()))
    if store is None and store_dir:
        store = FileFactsStore(store_dir)
    keys = {p: file_key(p) for p in paths} if store else {}
    known = store.facts if store else {}

    def usable(key: str) -> bool:
        fact = known.get(key)
        return fact is not None and (quick or fact["phash"] is not None
                                     or fact["problem"] is not None)

    missing = [p for p in paths if not (store and usable(keys[p]))]

    def inspect(path: str) -> dict:
        return inspect_file(path, quick=quick, max_pixels=max_pixels).as_dict()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = dict(zip(missing, pool.map(inspect, missing)))
    if store:
        remembered = {keys[p]: facts for p, facts in found.items()
                      if facts["problem"] != TOO_LARGE}  # depends on the limit
        decoded = {keys[p] for p, facts in found.items()
                   if not quick and facts["problem"] is None}
        if remembered or decoded - store.decoded:
            store.facts.update(remembered)
            store.decoded |= decoded
            store.save()  # skipped where the folder cannot be written
        found = {p: found[p] if p in found else _with_size_check(dict(known[keys[p]]), max_pixels)
                 for p in paths}  # facts remembered under another limit are checked again
    rows = [found[p] for p in manifest["path"]]
    columns = pd.DataFrame(rows, index=manifest.index).drop(columns="path")
    # 64-bit hashes as Python ints: beside a None, pandas would make them float64 (53 bits)
    columns["phash"] = pd.Series([row["phash"] for row in rows], index=manifest.index, dtype=object)
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


def exact_duplicates(table: pd.DataFrame, relation: DuplicateRelation) -> list[dict]:
    """The groups of files with the same bytes or the same decoded pixels (``same``:
    ``bytes`` or ``pixels``)."""
    rows = _by_path(table)
    groups = []
    for group in relation.exact:
        members = rows.loc[group]
        same = "bytes" if members["sha256"].nunique() == 1 else "pixels"
        groups.append(group_entry(members) | {"same": same})
    return groups


def near_duplicates(table: pd.DataFrame, pairs: list[NearPair]) -> list[dict]:
    """``pairs`` (confirmed or rejected near duplicates) as audit entries: files, whether
    they span two splits or two labels, hash distance and pixel similarity; cross-split
    pairs first."""
    rows = _by_path(table)
    entries = [group_entry(rows.loc[[pair.first, pair.second]])
               | {"distance": pair.distance, "similarity": round(pair.similarity, 4)}
               for pair in pairs]
    return sorted(entries, key=lambda p: (not p["cross_split"], -p["similarity"],
                                          p["files"][0]["path"]))


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
    workers: int | None = None,
    max_pixels: int | None = None,
    table: pd.DataFrame | None = None,
    relation: DuplicateRelation | None = None,
    candidate_distance: int = CANDIDATE_DISTANCE,
    min_similarity: float = MIN_SIMILARITY,
) -> dict:
    """The whole audit as a JSON-ready dict (see the module docstring); images of more
    than ``max_pixels`` pixels are reported as possible decompression bombs.

    ``table`` (the manifest's file facts) and ``relation`` (the copies among them), when
    the data module has found them already, are used instead of inspecting again; a quick
    audit finds identical bytes only."""
    max_pixels = int(max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    if table is None:
        table = inspect_manifest(manifest, quick=quick, workers=workers, max_pixels=max_pixels)
    else:
        facts = table.drop(columns=[c for c in ("label", "patient_id", "split") if c in table])
        table = manifest.merge(facts.drop_duplicates("path"), on="path", how="left")
    if relation is None:
        relation = find_duplicates(table, candidate_distance=candidate_distance,
                                   min_similarity=min_similarity, max_pixels=max_pixels,
                                   workers=workers)
    exact = exact_duplicates(table, relation)
    near = near_duplicates(table, relation.confirmed)
    rejected = near_duplicates(table, relation.rejected)
    groups = copy_groups_of(table, relation)
    patients = patients_in_several_splits(manifest)
    problems = file_problems(table)
    result = {
        "files": len(table),
        "counts": split_class_counts(manifest),
        "class_totals": class_totals(manifest),
        "problems": problems,
        "max_image_pixels": max_pixels,
        "exact_duplicates": exact,
        "near_duplicates": near,
        "near_duplicate_candidates_rejected": rejected,
        "near_duplicate_max_distance": None if quick else relation.candidate_distance,
        "near_duplicate_min_similarity": None if quick else relation.min_similarity,
        "copy_groups": groups,
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
        "near_duplicate_candidates_rejected": None if quick else len(rejected),
        "copy_groups": len(groups),
        "copy_groups_kept_in_one_split": sum(
            not g["cross_split"] for g in groups if _in_splits(g)),
        "copy_groups_across_splits": sum(g["cross_split"] for g in groups),
        "patients_with_several_images": patients_with_several_images(manifest),
        "patients_kept_in_one_split": patients_kept_together(manifest),
        "patients_in_several_splits": len(patients) if result["patient_ids_known"] else None,
        "duplicates_with_different_labels": sum(g["labels_differ"] for g in groups),
    }
    return result


def copy_groups_of(table: pd.DataFrame, relation: DuplicateRelation) -> list[dict]:
    """Every group of copies (exact and confirmed near duplicates, joined transitively) as
    an audit entry."""
    return group_entries(table, relation.groups(table["path"].drop_duplicates().tolist()))


def group_entries(table: pd.DataFrame, groups: list[list[str]]) -> list[dict]:
    """Each group of paths of ``table`` as a :func:`group_entry`."""
    rows = _by_path(table)
    return [group_entry(rows.loc[group]) for group in groups]


def _by_path(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop_duplicates("path").set_index("path", drop=False).rename_axis(None)


def class_totals(manifest: pd.DataFrame) -> dict:
    """Images per class over the whole data set (every split, unused and excluded)."""
    return {str(k): int(v) for k, v in manifest["label"].value_counts().sort_index().items()}


def patients_with_several_images(manifest: pd.DataFrame) -> int | None:
    """Patients with two or more images in train/val/test (``None`` without patient ids)."""
    used = manifest[manifest["split"].isin(SPLITS)]
    if not used["patient_id"].notna().any():
        return None
    return int((used["patient_id"].value_counts() > 1).sum())


def patients_kept_together(manifest: pd.DataFrame) -> int | None:
    """Patients with two or more images in train/val/test, all in one of them (``None``
    without patient ids)."""
    used = manifest[manifest["split"].isin(SPLITS) & manifest["patient_id"].notna()]
    if used.empty:
        return None
    per_patient = used.groupby("patient_id")["split"].agg(["size", "nunique"])
    return int(((per_patient["size"] > 1) & (per_patient["nunique"] == 1)).sum())


def _in_splits(group: dict) -> bool:
    return any(f["split"] in SPLITS for f in group["files"])


def _file_entry(row: pd.Series) -> dict:
    return {"path": row["path"], "label": row["label"], "split": row["split"]}


def group_entry(rows: pd.DataFrame) -> dict:
    """Files of ``rows`` (path, label, split, sorted by path), whether they lie in two of
    train/val/test and whether their labels differ."""
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
