"""``python benchmark.py --similarity``: where :data:`MIN_SIMILARITY` sits between copies
and distinct images, measured on the real sample images in ``../shared/data``.

For each sample image, copies of six kinds are written to a scratch folder (JPEG at quality
60, resized to half, resized to 224 x 224, brightened by 12 grey levels, cropped by 2 % per
side, cropped by 3 % on two sides then shrunk to 0.75x and saved as JPEG at quality 75; the
others as PNG); the perceptual-hash distance of each copy to its original and their
:func:`aligned_similarity` are recorded. Then every pair of distinct images of one data set
(same class folder, and across its class folders) is scored the same way. The table shows
the lowest copy score, the highest distinct score and the gap around the threshold.

Every file, original or copy, is seen as :func:`find_duplicates` sees it: its perceptual
hash from the full inspection (:func:`inspect_file`) and, for the comparison, the reduced
image the duplicate search reads (:func:`comparable_image`, a thumbnail with a shorter side of at least
``4 * SIDE`` pixels: a JPEG is decoded at a reduced scale), read once per file.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medrepro.core.errors import DataError
from medrepro.datamodules.audit.duplicate_relation import CANDIDATE_DISTANCE, comparable_image
from medrepro.datamodules.audit.file_inspection import inspect_file
from medrepro.datamodules.audit.image_similarity import MIN_SIMILARITY, aligned_similarity
from medrepro.datamodules.audit.perceptual_hash import hamming_distance
from medrepro.datamodules.transforms.image_reader import read_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    return image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))))


def _crop(image: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = image.size
    return image.crop((round(left * w), round(top * h), w - round(right * w), h - round(bottom * h)))


# kind: (what is done to the 8-bit grayscale original, how the copy is saved)
COPIES: dict[str, tuple[Callable[[Image.Image], Image.Image], dict]] = {
    "JPEG q60": (lambda im: im, {"format": "JPEG", "quality": 60}),
    "resized 0.5x": (lambda im: _scaled(im, 0.5), {"format": "PNG"}),
    "resized to 224 px": (lambda im: im.resize((224, 224)), {"format": "PNG"}),
    "brightness +12": (lambda im: im.point(lambda v: min(255, v + 12)), {"format": "PNG"}),
    "crop 2% per side": (lambda im: _crop(im, 0.02, 0.02, 0.02, 0.02), {"format": "PNG"}),
    "crop 3% left+top, 0.75x, JPEG q75": (
        lambda im: _scaled(_crop(im, 0.03, 0.03, 0, 0), 0.75), {"format": "JPEG", "quality": 75}),
}


def sample_images(root: Path) -> dict[str, dict[str, list[Path]]]:
    """``{data set: {class: [files]}}`` under ``root`` (``root/<data set>/<class>/<file>``);
    a missing or empty folder is a :class:`DataError`."""
    found: dict[str, dict[str, list[Path]]] = {}
    if root.is_dir():
        for dataset in sorted(p for p in root.iterdir() if p.is_dir()):
            classes = {c.name: sorted(f for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                       for c in sorted(dataset.iterdir()) if c.is_dir()}
            classes = {name: files for name, files in classes.items() if files}
            if classes:
                found[dataset.name] = classes
    if not found:
        raise DataError(f"The similarity calibration needs the sample images in {root} "
                        "(<data set>/<class>/<image>), and there are none there.")
    return found


def measure_similarity(root: Path, log: Callable[[str], None] = print) -> dict:
    """Copies and distinct pairs of the images under ``root``: hash distances and aligned
    similarities, summarised; returns the JSON-able figures."""
    root = Path(root)
    samples = sample_images(root)
    started = time.perf_counter()
    images = [(dataset, label, path) for dataset, classes in samples.items()
              for label, paths in classes.items() for path in paths]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small SSIMs: threads in parallel, not inside each
    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
                tempfile.TemporaryDirectory(prefix="medrepro-similarity-") as scratch:
            log(f"similarity: reading {len(images)} sample images ...")
            loaded = list(pool.map(lambda item: _load(item[2]), images))
            log(f"similarity: writing and scoring {len(images) * len(COPIES)} copies ...")
            copy_rows = list(pool.map(_score_copy, [
                (i, entry, kind, Path(scratch) / f"{i}-{k}")
                for i, entry in enumerate(loaded) for k, kind in enumerate(COPIES)]))
            pairs = [(i, j) for i, j in combinations(range(len(images)), 2)
                     if images[i][0] == images[j][0]]
            identical = [(i, j) for i, j in pairs if loaded[i]["pixels"] == loaded[j]["pixels"]]
            pairs = [p for p in pairs if p not in set(identical)]
            log(f"similarity: scoring {len(pairs)} pairs of distinct images ...")
            scores = list(pool.map(lambda ij: _score_pair(loaded[ij[0]], loaded[ij[1]]), pairs))
    finally:
        torch.set_num_threads(threads)

    def name(index: int) -> str:
        return str(images[index][2].relative_to(root))

    copies = []
    for kind in COPIES:
        rows = [row for row in copy_rows if row["kind"] == kind]
        distances = [r["distance"] for r in rows]
        similarities = [r["similarity"] for r in rows]
        copies.append({"kind": kind, "pairs": len(rows), "distance_max": max(distances),
                       "distance_mean": float(np.mean(distances)),
                       "similarity_min": min(similarities),
                       "similarity_mean": float(np.mean(similarities)),
                       "below_threshold": sum(s < MIN_SIMILARITY for s in similarities),
                       "beyond_candidate_distance": sum(d > CANDIDATE_DISTANCE for d in distances),
                       "found": sum(r["distance"] <= CANDIDATE_DISTANCE
                                    and r["similarity"] >= MIN_SIMILARITY for r in rows),
                       "lowest": name(min(rows, key=lambda r: r["similarity"])["index"])})
    distinct_rows = [{"files": [name(i), name(j)], "distance": d, "similarity": s,
                      "kind": "same class" if images[i][1] == images[j][1] else "cross class"}
                     for (i, j), (d, s) in zip(pairs, scores)]
    distinct = []
    for kind in ("same class", "cross class"):
        rows = [r for r in distinct_rows if r["kind"] == kind]
        if rows:
            distinct.append({
                "kind": kind, "pairs": len(rows),
                "similarity_max": max(r["similarity"] for r in rows),
                "similarity_mean": float(np.mean([r["similarity"] for r in rows])),
                "distance_min": min(r["distance"] for r in rows),
                "hash_candidates": sum(r["distance"] <= CANDIDATE_DISTANCE for r in rows),
                "above_threshold": sum(r["similarity"] >= MIN_SIMILARITY for r in rows)})
    lowest_copy = min(r["similarity_min"] for r in copies)
    highest_distinct = max((r["similarity_max"] for r in distinct), default=None)
    return {
        "root": str(root),
        "images": {d: {c: len(p) for c, p in classes.items()} for d, classes in samples.items()},
        "min_similarity": MIN_SIMILARITY, "candidate_distance": CANDIDATE_DISTANCE,
        "copies": copies, "distinct": distinct,
        "identical_pixels": [[name(i), name(j)] for i, j in identical],
        "top_distinct_pairs": sorted(distinct_rows, key=lambda r: -r["similarity"])[:5],
        "gap": {"lowest_copy": lowest_copy, "highest_distinct": highest_distinct,
                "copy_margin": lowest_copy - MIN_SIMILARITY,
                "distinct_margin": (None if highest_distinct is None
                                    else MIN_SIMILARITY - highest_distinct)},
        "seconds": round(time.perf_counter() - started, 1),
    }


def format_similarity(results: dict) -> str:
    """The calibration as Markdown tables and the gap in one sentence."""
    counts = "; ".join(f"{d}: " + ", ".join(f"{n} {c}" for c, n in classes.items())
                       for d, classes in results["images"].items())
    threshold, distance = results["min_similarity"], results["candidate_distance"]
    lines = [
        (f"Similarity calibration on {results['root']} ({counts}); MIN_SIMILARITY = "
        f"{threshold}, candidates at a hash distance <= {distance} of 64 bits."),
        "",
        ("| copies of each image | pairs | hash distance max | mean | similarity min | mean "
        f"| below threshold | hash distance > {distance} | found | lowest |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results["copies"]:
        lines.append(f"| {r['kind']} | {r['pairs']} | {r['distance_max']} | "
                     f"{r['distance_mean']:.1f} | {r['similarity_min']:.3f} | "
                     f"{r['similarity_mean']:.3f} | {r['below_threshold']} | "
                     f"{r['beyond_candidate_distance']} | {r['found']} | {r['lowest']} |")
    lines += [
        "",
        ("| distinct images of one data set | pairs | similarity max | mean | hash distance min "
        f"| hash candidates (<= {distance}) | at or above threshold |"),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["distinct"]:
        lines.append(f"| {r['kind']} | {r['pairs']:,} | {r['similarity_max']:.3f} | "
                     f"{r['similarity_mean']:.3f} | {r['distance_min']} | "
                     f"{r['hash_candidates']} | {r['above_threshold']} |")
    lines += ["", "Most similar distinct pairs:", "",
              "| files | kind | hash distance | similarity |", "|---|---|---:|---:|"]
    for r in results["top_distinct_pairs"]:
        lines.append(f"| {r['files'][0]} / {r['files'][1]} | {r['kind']} | {r['distance']} | "
                     f"{r['similarity']:.3f} |")
    gap = results["gap"]
    if results["identical_pixels"]:
        lines += ["", "Left out as not distinct (identical pixels): " + "; ".join(
            " / ".join(p) for p in results["identical_pixels"]) + "."]
    high = gap["highest_distinct"]
    lines += ["", (f"Gap: copies score at least {gap['lowest_copy']:.3f} "
                   f"({gap['copy_margin']:+.3f} from {threshold}), distinct images at most "
                   + ("n/a" if high is None else
                      f"{high:.3f} ({-gap['distinct_margin']:+.3f} from {threshold})")
                   + f"; {results['seconds']:.0f} s.")]
    return "\n".join(lines)


def _load(path: Path) -> dict:
    facts = inspect_file(path, quick=False)
    if facts.problem:
        raise DataError(f"The sample image {path} cannot be used: {facts.problem}.")
    gray8 = np.round(read_image(path, 1)[:, :, 0] * 255).astype(np.uint8)
    return {"image": Image.fromarray(gray8), "phash": facts.phash,
            "pixels": facts.pixel_sha256, "small": comparable_image(path)}


def _score_copy(task: tuple[int, dict, str, Path]) -> dict:
    index, entry, kind, stem = task
    change, saving = COPIES[kind]
    path = stem.with_suffix("." + saving["format"].lower())
    change(entry["image"]).save(path, **saving)
    copy = _load(path)
    return {"index": index, "kind": kind,
            "distance": hamming_distance(entry["phash"], copy["phash"]),
            "similarity": aligned_similarity(entry["small"], copy["small"])}


def _score_pair(first: dict, second: dict) -> tuple[int, float]:
    return (hamming_distance(first["phash"], second["phash"]),
            aligned_similarity(first["small"], second["small"]))
