"""``python benchmark.py --grouping``: how long finding the copies among many images takes,
and whether the planted ones are found.

A folder of ``count`` distinct images is generated (seeded smooth random textures, PNG,
160 to 224 px, in two class folders), a few of them in look-alike pairs (the same coarse
structure, different fine detail: their perceptual hashes are near-duplicate candidates,
their pixels are not copies), and a few percent of them get a planted copy: the same
bytes, a lossless re-save (other bytes, the same pixels), a JPEG re-encoding, or a
resized one (0.75x, 1.25x). Then, as a training job's ``setup()`` does it:

1. the first inspection: :func:`inspect_manifest` with a :class:`FileFactsStore`, full
   (every file decoded and hashed);
2. grouping from the stored facts, as the next job of a sweep: the store loaded again,
   :func:`inspect_manifest` (every fact from the store), :func:`find_duplicates` (the
   candidate search over the perceptual hashes and the pixel comparison of each candidate
   pair; a first time, and a second time with a freshly loaded store that remembers the
   pair scores) and :func:`make_split` with the links.

The planted list is the ground truth: recall is the share of planted copies that end up in
one group with their original, and no group may join two distinct images.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from medrepro.core.records import ImageRecord
from medrepro.datamodules.audit.data_audit import inspect_manifest
from medrepro.datamodules.audit.duplicate_relation import copy_groups, find_duplicates
from medrepro.datamodules.audit.file_facts_store import FileFactsStore
from medrepro.datamodules.audit.perceptual_hash import near_duplicate_pairs
from medrepro.datamodules.splitting.split import MANIFEST_COLUMNS, make_split

SIDES = (160, 176, 192, 208, 224)
CLASSES = ("a", "b")
COPY_KINDS = ("identical bytes", "lossless re-save", "JPEG q85", "resized 0.75x",
              "resized 1.25x")
TARGET_SECONDS = 10.0  # "grouping 20,000 images takes seconds"
RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}


@dataclass
class Planted:
    """The generated folder's files and the truth about them."""

    records: list[ImageRecord] = field(default_factory=list)
    family: dict[str, int] = field(default_factory=dict)  # path -> its distinct image
    copies: list[dict] = field(default_factory=list)  # {original, copy, kind}
    lookalikes: list[tuple[str, str]] = field(default_factory=list)


def texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """A smooth random ``side`` x ``side`` 8-bit texture (four octaves of noise)."""
    image = np.zeros((side, side), np.float32)
    for cells, amplitude in ((3, 1.0), (6, 0.7), (12, 0.4), (24, 0.2)):
        image += amplitude * _noise(rng, cells, side)
    return _to_8_bit(image, 15, 235)


def lookalike_pair(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Two images with the same coarse structure and independent fine detail: their
    perceptual hashes are a few bits apart, their pixels are not copies."""
    base = _to_8_bit(_noise(rng, 8, side), 25, 225).astype(np.float32)
    return tuple(np.clip(base + 10 * _noise(rng, 24, side), 0, 255).astype(np.uint8)
                 for _ in range(2))


def make_images(folder: Path, count: int, seed: int = 0, copy_share: float = 0.04,
                lookalike_share: float = 0.01) -> Planted:
    """``count`` distinct images in ``folder/{a,b}`` (of them ``2 * lookalike_share *
    count`` in look-alike pairs) and ``copy_share * count`` planted copies of others, the
    kinds of :data:`COPY_KINDS` in turn. Seeded: the same arguments give the same files."""
    rng = np.random.default_rng(seed)
    pairs = round(lookalike_share * count / 2) if count >= 4 else 0
    singles = count - 2 * pairs
    copied = rng.choice(singles, size=min(singles, round(copy_share * count)),
                        replace=False)
    kinds = {int(i): COPY_KINDS[k % len(COPY_KINDS)] for k, i in enumerate(sorted(copied))}
    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)

    def path(index: int, suffix: str = ".png") -> Path:
        return folder / CLASSES[index % 2] / f"{index:06d}{suffix}"

    def write_single(index: int) -> list[tuple]:
        generator = np.random.default_rng([seed, index])
        image = texture(generator, SIDES[index % len(SIDES)])
        original = path(index)
        _write(original, image)
        kind = kinds.get(index)
        return [(index, original, None)] + (
            [] if kind is None else [(index, _write_copy(original, image, kind), kind)])

    def write_pair(pair: int) -> list[tuple]:
        generator = np.random.default_rng([seed, count + pair])
        first, second = singles + 2 * pair, singles + 2 * pair + 1
        images = lookalike_pair(generator, SIDES[pair % len(SIDES)])
        for index, image in zip((first, second), images):
            _write(path(index), image)
        return [(first, path(first), "look-alike"), (second, path(second), "look-alike")]

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # cv2 frees the GIL
        written = [row for rows in pool.map(write_single, range(singles)) for row in rows]
        written += [row for rows in pool.map(write_pair, range(pairs)) for row in rows]
    planted = Planted()
    for index, file, kind in written:
        planted.records.append(ImageRecord(str(file), CLASSES[index % 2]))
        planted.family[str(file)] = index
        if kind in COPY_KINDS:
            planted.copies.append({"original": str(path(index)), "copy": str(file),
                                   "kind": kind})
    planted.lookalikes = [(str(path(singles + 2 * p)), str(path(singles + 2 * p + 1)))
                          for p in range(pairs)]
    return planted


def measure_grouping(scratch: Path, count: int, seed: int = 0,
                     log: Callable[[str], None] = print) -> dict:
    """Generate the images in ``scratch`` and measure the first inspection and the grouping
    from the stored facts; returns the JSON-able figures."""
    scratch = Path(scratch)
    facts = scratch / "facts"
    log(f"grouping: writing {count:,} distinct images and the planted copies ...")
    started = time.perf_counter()
    planted = make_images(scratch / "images", count, seed)
    seconds = {"generate": time.perf_counter() - started}
    files = len(planted.records)
    frame = pd.DataFrame([(r.path, r.label, r.patient_id, None) for r in planted.records],
                         columns=MANIFEST_COLUMNS)

    log(f"grouping: first inspection of {files:,} files (decode + hashes) ...")
    started = time.perf_counter()
    inspect_manifest(frame, quick=False, store=FileFactsStore(facts))
    seconds["first_inspection"] = time.perf_counter() - started

    log("grouping: from the stored facts ...")
    started = time.perf_counter()
    store = FileFactsStore(facts)
    seconds["store_load"] = time.perf_counter() - started
    started = time.perf_counter()
    table = inspect_manifest(frame, quick=False, store=store)
    seconds["inspection_from_store"] = time.perf_counter() - started
    hashes = np.array([int(h) for h in table["phash"].dropna()], dtype=np.uint64)
    started = time.perf_counter()
    near_duplicate_pairs(hashes, 8)
    seconds["candidate_search"] = time.perf_counter() - started
    started = time.perf_counter()
    relation = find_duplicates(table, store)
    seconds["find_duplicates_first"] = time.perf_counter() - started

    log("grouping: again, pair scores remembered ...")
    started = time.perf_counter()
    again_store = FileFactsStore(facts)
    again_table = inspect_manifest(frame, quick=False, store=again_store)
    seconds["remembered_inspection"] = time.perf_counter() - started
    started = time.perf_counter()
    again = find_duplicates(again_table, again_store)
    seconds["find_duplicates_remembered"] = time.perf_counter() - started
    started = time.perf_counter()
    manifest = make_split(planted.records, list(CLASSES), mode="ratios", ratios=RATIOS,
                          seed=seed, links=again.links())
    seconds["make_split"] = time.perf_counter() - started

    figures = check_relation(planted, relation, manifest)
    figures["same_relation_when_remembered"] = _same_relation(relation, again)
    seconds["grouping_first"] = (seconds["store_load"] + seconds["inspection_from_store"]
                                 + seconds["find_duplicates_first"] + seconds["make_split"])
    seconds["grouping_remembered"] = (seconds["remembered_inspection"]
                                      + seconds["find_duplicates_remembered"]
                                      + seconds["make_split"])
    return {
        "distinct_images": count, "files": files, "seed": seed,
        "image_sides": list(SIDES),
        "planted_copies": _count_by_kind(planted.copies),
        "lookalike_pairs": len(planted.lookalikes),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "images_per_s": {k: round(files / v, 1) if v > 0 else None for k, v in seconds.items()
                         if k not in ("generate", "candidate_search")},
        **figures,
        "target": {"seconds": TARGET_SECONDS, "measured_first": round(seconds["grouping_first"], 2),
                   "measured_remembered": round(seconds["grouping_remembered"], 2),
                   "met_first": seconds["grouping_first"] < TARGET_SECONDS,
                   "met_remembered": seconds["grouping_remembered"] < TARGET_SECONDS},
    }


def check_relation(planted: Planted, relation, manifest: pd.DataFrame) -> dict:
    """The relation and the split against the planted truth."""
    paths = [r.path for r in planted.records]
    groups = copy_groups(paths, relation.links())
    group_of = {p: i for i, g in enumerate(groups) for p in g}
    found = {kind: 0 for kind in COPY_KINDS}
    for copy in planted.copies:
        a, b = group_of.get(copy["original"]), group_of.get(copy["copy"])
        found[copy["kind"]] += a is not None and a == b
    mixed = [g for g in groups if len({planted.family[p] for p in g}) > 1]
    confirmed = {frozenset((p.first, p.second)) for p in relation.confirmed}
    split_of = dict(zip(manifest["path"], manifest["split"]))
    planted_kinds = _count_by_kind(planted.copies)
    return {
        "candidates": len(relation.confirmed) + len(relation.rejected),
        "exact_groups": len(relation.exact),
        "confirmed": len(relation.confirmed),
        "rejected": len(relation.rejected),
        "copy_groups": len(groups),
        "planted_found": sum(found.values()),
        "recall": sum(found.values()) / len(planted.copies) if planted.copies else None,
        "recall_by_kind": {k: found[k] / n for k, n in planted_kinds.items() if n},
        "lookalikes_confirmed": sum(frozenset(p) in confirmed for p in planted.lookalikes),
        "distinct_images_grouped": sum(len(g) for g in mixed),
        "groups_joining_distinct_images": len(mixed),
        "groups_across_splits": sum(len({split_of[p] for p in g}) > 1 for g in groups),
        "lowest_confirmed_similarity": min((p.similarity for p in relation.confirmed),
                                           default=None),
        "highest_rejected_similarity": max((p.similarity for p in relation.rejected),
                                           default=None),
    }


def format_grouping(results: dict) -> str:
    """The grouping figures as a Markdown table and a few sentences."""
    g = results
    s, rate = g["seconds"], g["images_per_s"]
    planted = ", ".join(f"{n} {k}" for k, n in g["planted_copies"].items())
    lines = [
        (f"Grouping: {g['distinct_images']:,} distinct generated images "
        f"({min(g['image_sides'])}-{max(g['image_sides'])} px PNG textures, "
        f"{g['lookalike_pairs']} look-alike pairs among them) + "
        f"{sum(g['planted_copies'].values())} planted copies ({planted}) = {g['files']:,} files; "
        f"written in {s['generate']:.1f} s."),
        "",
        "| step | seconds | images/s |",
        "|---|---:|---:|",
    ]
    rows = [
        ("first inspection (decode + hashes, into the store)", "first_inspection"),
        ("load the store", "store_load"),
        ("inspect_manifest from the store", "inspection_from_store"),
        ("find_duplicates, first time (candidates + scoring)", "find_duplicates_first"),
        ("make_split with the links", "make_split"),
        ("grouping, first time (the four steps above)", "grouping_first"),
        ("next job: load + inspect_manifest from the store", "remembered_inspection"),
        ("next job: find_duplicates, pair scores remembered", "find_duplicates_remembered"),
        ("next job: grouping (load, inspect, find, split)", "grouping_remembered"),
    ]
    for label, key in rows:
        per = rate.get(key)
        lines.append(f"| {label} | {s[key]:.2f} | {per:,.0f} |" if per else
                     f"| {label} | {s[key]:.2f} | - |")
    by_kind = ", ".join(f"{k} {v:.0%}" for k, v in g["recall_by_kind"].items())
    low, high = g["lowest_confirmed_similarity"], g["highest_rejected_similarity"]
    lines += [
        "",
        (f"Candidate search alone (perceptual hashes, {g['files']:,} files): "
        f"{s['candidate_search']:.2f} s. Candidates {g['candidates']:,}: confirmed "
        f"{g['confirmed']:,}, rejected {g['rejected']:,}; exact groups (same bytes or pixels) "
        f"{g['exact_groups']:,}; groups of copies {g['copy_groups']:,}."),
        (f"Planted copies found: {g['planted_found']:,} of {sum(g['planted_copies'].values()):,} "
        f"(recall {_percent(g['recall'])}; {by_kind}). Look-alike pairs confirmed as copies: "
        f"{g['lookalikes_confirmed']} of {g['lookalike_pairs']}. Distinct images put in one "
        f"group: {g['distinct_images_grouped']}. Groups split across train/val/test: "
        f"{g['groups_across_splits']}."),
        "Similarity of confirmed pairs from "
        + (f"{low:.3f}" if low is not None else "n/a")
        + ", of rejected candidates up to "
        + (f"{high:.3f}" if high is not None else "n/a")
        + f". Same relation when the pair scores are remembered: "
        f"{'yes' if g['same_relation_when_remembered'] else 'NO'}.",
        "",
        "| target | measured | met |",
        "|---|---:|:---:|",
    ]
    t = g["target"]
    for label, key in (("first time", "first"), ("pair scores remembered", "remembered")):
        lines.append(f"| grouping {g['distinct_images']:,} images from the stored facts, {label} "
                     f"(< {t['seconds']:.0f} s) | {t['measured_' + key]:.1f} s | "
                     f"{'yes' if t['met_' + key] else 'no'} |")
    return "\n".join(lines)


def _noise(rng: np.random.Generator, cells: int, side: int) -> np.ndarray:
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(grid, (side, side), interpolation=cv2.INTER_CUBIC)


def _to_8_bit(image: np.ndarray, low: float, high: float) -> np.ndarray:
    span = float(image.max() - image.min()) or 1.0
    return ((image - image.min()) * ((high - low) / span) + low).astype(np.uint8)


def _write(path: Path, image: np.ndarray, *parameters: int) -> None:
    if not cv2.imwrite(str(path), image, list(parameters)):
        raise OSError(f"could not write {path}")


def _write_copy(original: Path, image: np.ndarray, kind: str) -> Path:
    stem = original.with_name(f"{original.stem}-copy")
    if kind == "identical bytes":
        target = stem.with_suffix(".png")
        shutil.copyfile(original, target)
    elif kind == "lossless re-save":
        target = stem.with_suffix(".png")
        _write(target, image, cv2.IMWRITE_PNG_COMPRESSION, 9)
    elif kind == "JPEG q85":
        target = stem.with_suffix(".jpg")
        _write(target, image, cv2.IMWRITE_JPEG_QUALITY, 85)
    else:
        factor = 0.75 if kind == "resized 0.75x" else 1.25
        side = round(image.shape[0] * factor)
        target = stem.with_suffix(".png")
        _write(target, cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA
                                  if factor < 1 else cv2.INTER_LINEAR))
    return target


def _count_by_kind(copies: list[dict]) -> dict[str, int]:
    counts = {kind: 0 for kind in COPY_KINDS}
    for copy in copies:
        counts[copy["kind"]] += 1
    return {k: n for k, n in counts.items() if n}


def _same_relation(first, second, tolerance: float = 1e-5) -> bool:
    """The same exact groups, confirmed and rejected pairs, with scores equal to within
    ``tolerance`` (the store keeps them to six decimals)."""
    def pairs(near):
        return sorted(((p.first, p.second), p.similarity) for p in near)

    if sorted(first.exact) != sorted(second.exact):
        return False
    for a, b in ((first.confirmed, second.confirmed), (first.rejected, second.rejected)):
        a, b = pairs(a), pairs(b)
        if [k for k, _ in a] != [k for k, _ in b] or any(
                abs(x - y) > tolerance for (_, x), (_, y) in zip(a, b)):
            return False
    return True


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
