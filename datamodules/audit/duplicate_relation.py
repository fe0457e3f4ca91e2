"""Which images are copies of one another: the relation that the split and the audit share.

Two files are copies when

* their bytes are identical (same SHA-256), or their decoded pixels are (same SHA-256 of
  the 8-bit grayscale image: a PNG and a lossless re-save of it), or
* they are a confirmed near duplicate: their perceptual hashes are at most
  ``candidate_distance`` of 64 bits apart (a candidate) and, compared pixel by pixel after
  alignment, their structural similarity is at least ``min_similarity``
  (:mod:`medrepro.datamodules.audit.image_similarity`). Candidates below it are rejected
  and kept, with their score, for the audit.

All facts come from the file inspection (:func:`~medrepro.datamodules.audit.data_audit.inspect_manifest`,
remembered per file in the :class:`FileFactsStore`); only the files of candidate pairs are
read again, and each pair's score is remembered in the store too, so the jobs of a sweep
compare each pair once. :func:`copy_groups` joins the relation transitively (connected
components, scipy's ``csgraph``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from medrepro.core.errors import DataError
from medrepro.datamodules.audit.file_facts_store import FileFactsStore, file_key
from medrepro.datamodules.audit.image_similarity import MIN_SIMILARITY, SIDE, aligned_similarity
from medrepro.datamodules.audit.perceptual_hash import near_duplicate_pairs
from medrepro.datamodules.transforms.image_reader import thumbnail

CANDIDATE_DISTANCE = 8
# real data sets have well under one candidate per image (Kaggle pneumonia: 190 pairs at
# 4 bits among 5,216 images); far more means images without a distinguishing layout
MAX_CANDIDATES_PER_IMAGE = 20


@dataclass(frozen=True)
class NearPair:
    """Two files whose hashes are ``distance`` bits apart and whose aligned pixels have
    structural similarity ``similarity``."""

    first: str
    second: str
    distance: int
    similarity: float

    def as_dict(self) -> dict:
        return {"files": [self.first, self.second], "distance": self.distance,
                "similarity": round(self.similarity, 4)}


@dataclass
class DuplicateRelation:
    """Exact groups (identical bytes or pixels) and near pairs, confirmed or rejected."""

    exact: list[list[str]] = field(default_factory=list)
    confirmed: list[NearPair] = field(default_factory=list)
    rejected: list[NearPair] = field(default_factory=list)
    candidate_distance: int = CANDIDATE_DISTANCE
    min_similarity: float = MIN_SIMILARITY

    def links(self) -> list[tuple[str, str]]:
        """Pairs of paths that must stay together (each exact group as a chain)."""
        chained = [(group[i], group[i + 1]) for group in self.exact for i in range(len(group) - 1)]
        return chained + [(pair.first, pair.second) for pair in self.confirmed]

    def groups(self, paths: Sequence[str]) -> list[list[str]]:
        """The groups of two or more copies among ``paths`` (sorted)."""
        return copy_groups(paths, self.links())


def copy_groups(paths: Sequence[str], links: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Connected components of ``links`` over ``paths`` with two or more members, each
    sorted, in order of their first path; links naming other paths are ignored."""
    labels = component_labels(paths, links)
    members: dict[int, list[str]] = {}
    for path, label in zip(paths, labels):
        members.setdefault(int(label), []).append(path)
    return sorted((sorted(g) for g in members.values() if len(g) > 1), key=lambda g: g[0])


def component_labels(paths: Sequence[str], links: Sequence[tuple[str, str]]) -> np.ndarray:
    """For each of ``paths``, the number of its connected component under ``links``."""
    index = {path: i for i, path in enumerate(paths)}
    edges = [(index[a], index[b]) for a, b in links if a in index and b in index]
    rows = np.array([a for a, _ in edges], dtype=np.int64)
    cols = np.array([b for _, b in edges], dtype=np.int64)
    graph = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(paths), len(paths)))
    return connected_components(graph, directed=False)[1]


def find_duplicates(
    table: pd.DataFrame,
    store: FileFactsStore | None = None,
    candidate_distance: int = CANDIDATE_DISTANCE,
    min_similarity: float = MIN_SIMILARITY,
    max_pixels: int | None = None,
    workers: int | None = None,
) -> DuplicateRelation:
    """The copy relation among the files of ``table`` (columns ``path``, ``sha256``,
    ``pixel_sha256``, ``phash`` from the file inspection; a file without them, e.g. an
    unreadable one, is related to nothing). Scores of pairs already compared are taken from
    ``store`` and new ones saved there."""
    relation = DuplicateRelation(candidate_distance=candidate_distance,
                                 min_similarity=min_similarity)
    table = table.drop_duplicates("path").sort_values("path", ignore_index=True)
    relation.exact = _exact_groups(table)
    exact_links = relation.links()
    hashed = table[table["phash"].notna()].reset_index(drop=True)
    if len(hashed) < 2:
        return relation
    component = component_labels(hashed["path"].tolist(), exact_links)
    # exact copies share their hash: search among one image per group of exact copies
    _, first_rows = np.unique(component, return_index=True)
    hashed = hashed.iloc[np.sort(first_rows)].reset_index(drop=True)
    if any(isinstance(h, float) for h in hashed["phash"]):
        raise TypeError("perceptual hashes must be ints: float64 keeps only 53 of their 64 bits")
    hashes = np.array([int(h) for h in hashed["phash"]], dtype=np.uint64)
    limit = MAX_CANDIDATES_PER_IMAGE * len(hashed)
    candidates = near_duplicate_pairs(hashes, candidate_distance, limit=limit)
    if candidates is None:
        raise DataError(
            f"The perceptual hashes of these {len(hashed)} images are so alike that more than "
            f"{limit} pairs are near-duplicate candidates at data.duplicates.candidate_distance="
            f"{candidate_distance}; lower it (e.g. to 4), or set data.split.group_duplicates=false "
            "to keep only identical files together."
        )
    paths = hashed["path"].tolist()
    scores = _similarities([(paths[i], paths[j]) for i, j, _ in candidates], store,
                           max_pixels, workers)
    for (i, j, distance), score in zip(candidates, scores):
        pair = NearPair(paths[i], paths[j], int(distance), score)
        (relation.confirmed if score >= min_similarity else relation.rejected).append(pair)
    return relation


def conflicting_groups(groups: Sequence[Sequence[str]], labels: Mapping[str, str]) -> list[list[str]]:
    """The groups of copies whose files carry more than one label."""
    return [list(g) for g in groups if len({labels[p] for p in g}) > 1]


def _exact_groups(table: pd.DataFrame) -> list[list[str]]:
    links = []
    for column in ("sha256", "pixel_sha256"):
        if column not in table:
            continue
        shared = table[table[column].notna() & table.duplicated(column, keep=False)]
        for paths in shared.groupby(column, sort=False)["path"].agg(list):
            links += [(paths[0], other) for other in paths[1:]]
    return copy_groups(table["path"].tolist(), links)


def _similarities(pairs: list[tuple[str, str]], store: FileFactsStore | None,
                  max_pixels: int | None, workers: int | None) -> list[float]:
    """The aligned similarity of each pair; remembered ones from ``store``."""
    keys = [_pair_key(a, b) for a, b in pairs]
    known = store.pairs if store is not None else {}
    todo = [pair for pair, key in zip(pairs, keys) if key not in known]
    needed = sorted({path for pair in todo for path in pair})
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        small = dict(zip(needed, pool.map(lambda p: _small(p, max_pixels), needed)))
        # rounded as the store keeps them, so every job decides on the same number
        found = dict(zip(todo, pool.map(lambda ab: round(_score(small[ab[0]], small[ab[1]]), 6),
                                        todo)))
    scores = [found[pair] if pair in found else float(known[key]) for pair, key in zip(pairs, keys)]
    if store is not None and found:
        store.pairs.update({key: score for pair, key, score in
                            zip(pairs, keys, scores) if pair in found})
        store.save()
    return scores


def comparable_image(path: str, max_pixels: int | None = None) -> np.ndarray:
    """The image of ``path`` as the comparison reads it: a grayscale thumbnail whose shorter
    side is at least 4 x :data:`SIDE` (a JPEG decoded at a reduced scale; finer than the
    comparison, so a JPEG original and a PNG copy of it shrink alike). Errors as
    :func:`~medrepro.datamodules.transforms.image_reader.read_image`."""
    return thumbnail(path, 4 * SIDE, max_pixels)


def _small(path: str, max_pixels: int | None) -> np.ndarray | None:
    """:func:`comparable_image`, kept in memory as at most 2 SIDE x 2 SIDE 8-bit pixels
    (what the comparison needs of it: it compares at SIDE, or half the smaller side)."""
    try:
        image = comparable_image(path, max_pixels)
    except DataError:  # changed or removed since it was inspected: compare nothing
        return None
    if min(image.shape) >= 2 * SIDE:
        image = cv2.resize(image, (2 * SIDE, 2 * SIDE), interpolation=cv2.INTER_AREA)
    return np.round(image * 255).astype(np.uint8)


def _score(first: np.ndarray | None, second: np.ndarray | None) -> float:
    if first is None or second is None:
        return 0.0
    return aligned_similarity(first, second)


def _pair_key(first: str, second: str) -> str:
    return "\n".join(sorted((file_key(first), file_key(second))))
