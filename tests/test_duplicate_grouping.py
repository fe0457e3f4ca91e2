"""Splits that keep identical and near-identical images together (issue 12).

What a user relies on: a copy of an image (the same bytes, the same pixels in another
file, or a re-encoded, resized or slightly cropped version) is found, and distinct images,
even look-alikes, are not; every group of copies lands in one of train/val/test for every
seed; copies filed under two classes are left out; and the checks before training stop,
naming the setting, when a user turns any of that off. Ground truth is what each test
planted, never the code's own relation. About 45 s, most of it on the real sample images.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import cv2
import hydra
import numpy as np
import pandas as pd
import pytest
from conftest import compose_config, shared_data
from PIL import Image

from medrepro.core.errors import DataError
from medrepro.core.records import SPLITS
from medrepro.datamodules.audit.data_audit import audit_data, inspect_manifest
from medrepro.datamodules.audit.duplicate_relation import (
    CANDIDATE_DISTANCE,
    comparable_image,
    find_duplicates,
)
from medrepro.datamodules.audit.file_facts_store import FileFactsStore
from medrepro.datamodules.audit.image_similarity import MIN_SIMILARITY, SIDE, aligned_similarity
from medrepro.datamodules.audit.perceptual_hash import hamming_distance, perceptual_hash
from medrepro.datamodules.audit.preflight import check_before_training
from medrepro.datamodules.transforms.image_reader import read_image

RATIOS = {"train": 0.7, "val": 0.15, "test": 0.15}
# 2 % crops of two sample images that the relation misses (measured, reported in issue 12):
# their hashes are too far for a candidate: Y89.JPG (a thin white frame that the crop
# removes) 16 bits, person1272_virus_2190.jpeg 10 bits; both score above 0.95 when compared.
CROPS_MISSED = {"Y89.JPG", "person1272_virus_2190.jpeg"}


# ---------------------------------------------------------------- synthetic images


def texture(base_seed: int, size: int = 128, detail_seed: int = 0, shared: float = 0.0) -> np.ndarray:
    """A distinct 8-bit image: a smooth random field (8 x 8 random values, bicubic
    up-sampled; the coarse layout a perceptual hash sees) plus a fine random texture
    (Gaussian noise blurred by size/128 pixels; the detail only a copy shares). The same
    ``base_seed`` with another ``detail_seed`` is a look-alike: the same layout, its own
    detail, except a fraction ``shared`` of the detail's variance taken from
    ``detail_seed=0`` (its detail then correlates about ``sqrt(shared)`` with it)."""
    coarse = np.random.default_rng([base_seed, 0]).random((8, 8)).astype(np.float32)
    base = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) * 180 + 40

    def detail(seed: int) -> np.ndarray:
        noise = np.random.default_rng([base_seed, 1, seed]).normal(0, 1, (size, size))
        fine = cv2.GaussianBlur(noise.astype(np.float32), (0, 0), size / 128)
        return fine / fine.std()

    fine = detail(0) if detail_seed == 0 else \
        np.sqrt(shared) * detail(0) + np.sqrt(1 - shared) * detail(detail_seed)
    return np.clip(base + fine * 14, 0, 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray, fmt: str = "PNG", **options) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt, **options)
    return str(path)


def byte_copy(source: str, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(Path(source).read_bytes())
    return str(path)


def jpeg_copy(source: str, path: Path, quality: int = 70) -> str:
    return save(path, np.asarray(Image.open(source)), "JPEG", quality=quality)


def resized_copy(source: str, path: Path, size: tuple[int, int]) -> str:
    return save(path, np.asarray(Image.open(source).resize(size, Image.BILINEAR)))


def lossless_resave(source: str, path: Path) -> str:
    """The same pixels in other bytes (PNG without compression)."""
    return save(path, np.asarray(Image.open(source)), compress_level=0)


def random_name(rng: np.random.Generator, suffix: str = ".png") -> str:
    return f"{int(rng.integers(16**8)):08x}{suffix}"


def table_of(paths: list[str], store: FileFactsStore | None = None) -> pd.DataFrame:
    """The full file inspection of ``paths`` (as training does it before splitting)."""
    frame = pd.DataFrame({"path": paths, "label": [Path(p).parent.name for p in paths],
                          "patient_id": None, "split": "train"})
    return inspect_manifest(frame, quick=False, store=store)


def pair_set(pairs) -> set[frozenset]:
    return {frozenset((p.first, p.second)) for p in pairs}


def group_set(groups) -> set[frozenset]:
    return {frozenset(g) for g in groups}


# ---------------------------------------------------------------- 1. real images

FAST = {"compress_level": 1}  # PNG copies of 2,000 px X-rays: lossless, written quickly
REAL_COPIES = {
    "jpeg_q60": lambda im: (im, "JPEG", {"quality": 60}),
    "jpeg_q75": lambda im: (im, "JPEG", {"quality": 75}),
    "half": lambda im: (im.resize((im.width // 2, im.height // 2), Image.BILINEAR), "PNG", FAST),
    "224px": lambda im: (im.resize((224, 224), Image.BILINEAR), "PNG", FAST),
    "crop_2pc": lambda im: (im.crop((round(0.02 * im.width), round(0.02 * im.height),
                                     im.width - round(0.02 * im.width),
                                     im.height - round(0.02 * im.height))), "PNG", FAST),
}


def sample_images() -> list[Path]:
    files = []
    for name in ("pneumonia_sample", "brain_mri_sample"):
        files += sorted(p for p in shared_data(name).rglob("*") if p.is_file())
    return files


@pytest.fixture(scope="module")
def real_copy_scores(tmp_path_factory, one_torch_thread) -> pd.DataFrame:
    """For every real sample image and every kind of copy in :data:`REAL_COPIES` (written
    to disk as a user's copy would be): the hash distance between the two files'
    inspections and the similarity of their thumbnails (as find_duplicates compares)."""
    files = sample_images()
    folder = tmp_path_factory.mktemp("real_copies")

    def measure(index_file):
        index, path = index_file
        gray = read_image(path, 1)[:, :, 0]  # as the file inspection hashes it
        small = comparable_image(path)  # as find_duplicates compares it
        rows = []
        for kind, make in REAL_COPIES.items():
            image, fmt, options = make(Image.fromarray(np.round(gray * 255).astype(np.uint8)))
            copy = folder / f"{kind}_{index}.{'jpg' if fmt == 'JPEG' else 'png'}"
            image.save(copy, fmt, **options)
            distance = hamming_distance(perceptual_hash(gray), perceptual_hash(read_image(copy, 1)[:, :, 0]))
            rows.append({"file": path.name, "kind": kind, "distance": distance,
                         "similarity": aligned_similarity(small, comparable_image(copy))})
        return rows

    with ThreadPoolExecutor(2) as pool:
        rows = [row for rows in pool.map(measure, enumerate(files)) for row in rows]
    return pd.DataFrame(rows)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["jpeg_q60", "jpeg_q75", "half", "224px"])
def test_real_reencoded_and_resized_copies_are_candidates_and_confirmed(real_copy_scores, kind):
    """Each of the 68 real X-rays and MRIs, re-saved as JPEG at quality 60 or 75, halved or
    resized to 224 px, is a near-duplicate candidate (hash within the default 8 bits) and
    confirmed by its pixels, so the split keeps such a copy with its original."""
    rows = real_copy_scores[real_copy_scores["kind"] == kind]
    assert len(rows) == 68
    far = rows[rows["distance"] > CANDIDATE_DISTANCE]
    assert far.empty, f"{kind} copies not even candidates:\n{far.to_string()}"
    low = rows[rows["similarity"] < MIN_SIMILARITY]
    assert low.empty, f"{kind} copies not confirmed:\n{low.to_string()}"


@pytest.mark.slow
def test_real_two_percent_crops_are_confirmed(real_copy_scores):
    """Real images cropped by 2 % per side are still the same image: confirmed by their
    pixels and, except the two measured misses (:data:`CROPS_MISSED`), near-duplicate
    candidates."""
    rows = real_copy_scores[real_copy_scores["kind"] == "crop_2pc"]
    known = rows["file"].isin(CROPS_MISSED)
    assert known.sum() == len(CROPS_MISSED)
    far = rows[~known & (rows["distance"] > CANDIDATE_DISTANCE)]
    assert far.empty, f"2 % crops whose hash is too far:\n{far.to_string()}"
    low = rows[~known & (rows["similarity"] < MIN_SIMILARITY)]
    assert low.empty, f"2 % crops not confirmed:\n{low.to_string()}"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 12: 2 % crops of Y89.JPG (16 bits) and "
                   "person1272_virus_2190.jpeg (10 bits) are not near-duplicate candidates")
def test_real_two_percent_crops_that_are_missed_today(real_copy_scores):
    """The two measured misses: when the relation finds them, this strict xfail fails and
    :data:`CROPS_MISSED` should be emptied."""
    rows = real_copy_scores[(real_copy_scores["kind"] == "crop_2pc")
                            & real_copy_scores["file"].isin(CROPS_MISSED)]
    assert (rows["distance"] <= CANDIDATE_DISTANCE).all()
    assert (rows["similarity"] >= MIN_SIMILARITY).all()


@pytest.mark.slow
def test_distinct_real_images_score_below_the_threshold(one_torch_thread):
    """No two distinct sample images of one data set (1,318 pairs, both classes) are taken
    for copies, so the split never joins two patients' images; the one identical pair of
    the sample (No15.jpg, No17.jpg: the same bytes) is."""
    files = sample_images()
    # shrunk once to 2 SIDE x 2 SIDE (floats in [0, 1]): aligned_similarity compares them at
    # SIDE, as it compares the thumbnails find_duplicates reads (half the smaller size)
    small = {p: cv2.resize(comparable_image(p), (2 * SIDE, 2 * SIDE), interpolation=cv2.INTER_AREA)
             for p in files}
    pairs = [(a, b) for a, b in itertools.combinations(files, 2)
             if a.parent.parent == b.parent.parent]  # within one data set, both classes
    with ThreadPoolExecutor(2) as pool:
        scores = dict(zip(pairs, pool.map(lambda ab: aligned_similarity(small[ab[0]], small[ab[1]]),
                                          pairs)))
    assert len(scores) == 1128 + 190
    identical = {(a, b) for a, b in scores if {a.name, b.name} == {"No15.jpg", "No17.jpg"}}
    assert len(identical) == 1 and scores[identical.pop()] >= MIN_SIMILARITY
    alike = {f"{a.name} ~ {b.name}": round(s, 3) for (a, b), s in scores.items()
             if s >= MIN_SIMILARITY and {a.name, b.name} != {"No15.jpg", "No17.jpg"}}
    assert not alike, f"distinct images taken for copies: {alike}"


# ---------------------------------------------------------------- 2. the relation


@pytest.fixture(scope="module")
def planted_folder(tmp_path_factory) -> dict:
    """``a/`` (24 distinct images) and ``b/`` (16), plus planted copies and look-alikes.
    Returns the paths, the planted groups of copies (by kind) and the look-alike pairs."""
    root = tmp_path_factory.mktemp("planted") / "images"
    rng = np.random.default_rng(12)
    originals = {label: [save(root / label / f"{label}{i:02d}.png", texture(100 * c + i))
                         for i in range(n)]
                 for c, label, n in ((0, "a", 24), (1, "b", 16))}
    a, b = originals["a"], originals["b"]
    big = save(root / "b" / "b_big.png", texture(999, size=256))
    exact_bytes = [  # byte-identical copies under random names, one under the other class
        [a[0], byte_copy(a[0], root / "a" / random_name(rng)), byte_copy(a[0], root / "b" / random_name(rng))],
        [b[0], byte_copy(b[0], root / "b" / random_name(rng))],
    ]
    exact_pixels = [[a[1], lossless_resave(a[1], root / "a" / random_name(rng))],
                    [b[1], lossless_resave(b[1], root / "b" / random_name(rng))]]
    near = [  # re-encoded or resized: each pair one group
        [a[2], jpeg_copy(a[2], root / "a" / random_name(rng, ".jpg"), quality=70)],
        [a[3], jpeg_copy(a[3], root / "a" / random_name(rng, ".jpeg"), quality=60)],
        [a[4], resized_copy(a[4], root / "a" / random_name(rng), (224, 224))],
        [b[2], resized_copy(b[2], root / "b" / random_name(rng), (192, 192))],
        [big, resized_copy(big, root / "b" / random_name(rng), (128, 128))],  # halved
    ]
    # a group of four joined through two kinds of copy: bytes and JPEG
    mixed = [a[5], byte_copy(a[5], root / "a" / random_name(rng)),
             jpeg_copy(a[5], root / "a" / random_name(rng, ".jpg"), quality=75)]
    mixed.append(resized_copy(mixed[2], root / "a" / random_name(rng), (160, 160)))
    lookalikes = [(a[6 + k], save(root / "b" / f"look{k}.png", texture(6 + k, detail_seed=k + 1)))
                  for k in range(6)]
    # closer still: a third of the fine texture's variance shared (scores about 0.6, within
    # the range of distinct real X-rays and MRIs, at most 0.74)
    lookalikes.append((a[12], save(root / "b" / "partial.png", texture(12, detail_seed=1, shared=0.3))))
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file())
    return {"root": root, "paths": paths, "exact_bytes": exact_bytes, "exact_pixels": exact_pixels,
            "near": near, "mixed": mixed, "lookalikes": lookalikes,
            "groups": exact_bytes + exact_pixels + near + [mixed]}


@pytest.fixture(scope="module")
def planted_relation(planted_folder, tmp_path_factory):
    store = FileFactsStore(tmp_path_factory.mktemp("facts"))
    table = table_of(planted_folder["paths"], store)
    return table, find_duplicates(table, store), store


def test_exact_copies_are_grouped_and_the_audit_says_bytes_or_pixels(planted_folder, planted_relation):
    """Byte-identical copies under random names (one under the other class) and lossless
    re-saves with other bytes form exactly the planted exact groups, and the audit tells
    the user which are the same bytes and which only the same pixels."""
    table, relation, _ = planted_relation
    planted = planted_folder["exact_bytes"] + planted_folder["exact_pixels"]
    mixed = planted_folder["mixed"][:2]  # the byte copy inside the mixed group
    assert group_set(relation.exact) == group_set(planted + [mixed])
    manifest = table[["path", "label", "patient_id", "split"]]
    audit = audit_data(manifest, table=table, relation=relation)
    same = {frozenset(f["path"] for f in g["files"]): g["same"] for g in audit["exact_duplicates"]}
    for group in planted_folder["exact_bytes"] + [mixed]:
        assert same[frozenset(group)] == "bytes"
    for group in planted_folder["exact_pixels"]:
        assert same[frozenset(group)] == "pixels"
    assert audit["summary"]["duplicates_with_different_labels"] == 1  # a/ and b/ copies of a00


def test_reencoded_and_resized_copies_are_confirmed_and_lookalikes_are_not(planted_folder, planted_relation):
    """JPEG re-saves (quality 60-75), resized and halved copies are confirmed near
    duplicates; look-alikes (same layout, other fine detail) are not, and those that were
    candidates (hash within 8 bits) are kept as rejected with a low score; the groups of
    copies are exactly the planted ones, so no two distinct images are joined."""
    table, relation, _ = planted_relation
    paths = planted_folder["paths"]
    confirmed = pair_set(relation.confirmed)
    for pair in planted_folder["near"]:
        assert frozenset(pair) in confirmed, pair
    assert group_set(relation.groups(paths)) == group_set(planted_folder["groups"])
    hashes = dict(zip(table["path"], table["phash"]))
    candidates = [pair for pair in planted_folder["lookalikes"]
                  if hamming_distance(int(hashes[pair[0]]), int(hashes[pair[1]])) <= CANDIDATE_DISTANCE]
    assert len(candidates) >= 3  # the construction makes look-alikes that the hash cannot tell apart
    assert planted_folder["lookalikes"][-1] in candidates  # the partial one
    rejected = {frozenset((p.first, p.second)): p for p in relation.rejected}
    for pair in candidates:
        assert rejected[frozenset(pair)].similarity < MIN_SIMILARITY
    assert not confirmed & {frozenset(pair) for pair in planted_folder["lookalikes"]}
    assert all(p.similarity >= MIN_SIMILARITY for p in relation.confirmed)
    assert all(p.distance <= CANDIDATE_DISTANCE for p in relation.confirmed + relation.rejected)


def test_pair_scores_are_remembered_and_not_recomputed(planted_folder, tmp_path):
    """A second run (another job of a sweep) takes every pair score from the store in the
    cache folder instead of reading the images again: after the candidates' files are
    overwritten with unreadable bytes of the same size and modification time (the store's
    key), it finds the same copies, which reading them would not."""
    paths = [str(tmp_path / Path(p).parent.name / Path(p).name) for p in planted_folder["paths"]]
    for source, path in zip(planted_folder["paths"], paths):
        byte_copy(source, Path(path))
    store = FileFactsStore(tmp_path / "facts")
    first = find_duplicates(table_of(paths, store), store)
    stored = FileFactsStore(tmp_path / "facts").pairs
    scored = first.confirmed + first.rejected
    assert len(first.confirmed) >= 5 and len(stored) == len(scored)
    for pair in scored:
        assert any(f"{pair.first}|" in key and f"{pair.second}|" in key for key in stored)
    for path in {p for pair in scored for p in (pair.first, pair.second)}:
        stat = os.stat(path)
        Path(path).write_bytes(bytes(stat.st_size))  # zeros: not an image
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    store = FileFactsStore(tmp_path / "facts")
    table = table_of(paths, store)  # facts of unchanged keys come from the store too
    second = find_duplicates(table, store)
    for now, before in ((second.confirmed, first.confirmed), (second.rejected, first.rejected)):
        assert [(p.first, p.second, p.distance) for p in now] == \
            [(p.first, p.second, p.distance) for p in before]
        assert [p.similarity for p in now] == pytest.approx([p.similarity for p in before], abs=1e-6)
    fresh = find_duplicates(table)  # without the store the overwritten files are compared
    assert not fresh.confirmed


# ---------------------------------------------------------------- 3-6. the split


def datamodule(root: Path, cache: Path, *overrides: str, seed: int | None = None):
    """The data module of ``data=folder`` (or an override) as training builds it, after
    ``setup("fit")``."""
    cfg = compose_config([f"data.root={root}", "data.cache.enabled=false", f"data.cache.dir={cache}",
                          *overrides], cache.parent / "run")
    if seed is not None:
        cfg.data.split.seed = seed
    module = hydra.utils.instantiate(cfg.data, augment=None, _convert_="all")
    module.setup("fit")
    return module


def splits_of(manifest: pd.DataFrame) -> dict[str, str]:
    return dict(zip(manifest["path"], manifest["split"]))


def target(n: int, split: str) -> int:
    """The ungrouped ratio target of a class of ``n`` images (README: val and test
    rounded half to even, train the rest)."""
    share = {s: int((Decimal(str(RATIOS[s])) * n).quantize(Decimal(1), ROUND_HALF_EVEN))
             for s in ("val", "test")}
    return share[split] if split in share else n - share["val"] - share["test"]


@pytest.fixture(scope="module")
def same_class_folder(tmp_path_factory) -> dict:
    """Class folders with planted groups of copies (2 to 4 files, all of one class), so
    that nothing is left out for conflicting labels."""
    root = tmp_path_factory.mktemp("same_class") / "images"
    rng = np.random.default_rng(7)
    groups = []
    for c, label, n in ((0, "a", 30), (1, "b", 20)):
        files = [save(root / label / f"{label}{i:02d}.png", texture(200 + 100 * c + i)) for i in range(n)]
        for g, size in enumerate((2, 3, 4, 2)):
            copies = [byte_copy(files[g], root / label / random_name(rng)),
                      jpeg_copy(files[g], root / label / random_name(rng, ".jpg"), quality=70),
                      lossless_resave(files[g], root / label / random_name(rng))]
            groups.append([files[g], *copies[: size - 1]])
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file())
    return {"root": root, "paths": paths, "groups": groups}


def test_copies_never_straddle_splits_and_counts_stay_close(same_class_folder, tmp_path_factory):
    """For 20 seeds, every planted group of copies lies in one split, every image is used,
    each split's per-class count is within the largest group's size of the ungrouped
    70/15/15 target, and the split is the same for the same seed and differs for another."""
    cache = tmp_path_factory.mktemp("split_cache") / "cache"
    paths, groups = same_class_folder["paths"], same_class_folder["groups"]
    largest = max(len(g) for g in groups)
    per_class = pd.Series([Path(p).parent.name for p in paths]).value_counts()
    manifests = {}
    for seed in range(20):
        module = datamodule(same_class_folder["root"], cache, "data=folder", seed=seed)
        manifest = module.manifest
        assert sorted(manifest["path"]) == paths and set(manifest["split"]) == set(SPLITS)
        where = splits_of(manifest)
        straddling = [g for g in groups if len({where[p] for p in g}) > 1]
        assert not straddling, f"seed {seed}: {straddling}"
        counts = pd.crosstab(manifest["split"], manifest["label"])
        for split in SPLITS:
            for label, n in per_class.items():
                assert abs(int(counts.loc[split, label]) - target(n, split)) <= largest, (seed, split, label)
        assert module.grouping_facts()["duplicate_groups"] == len(groups)
        manifests[seed] = manifest
    again = datamodule(same_class_folder["root"], cache, "data=folder", seed=3).manifest
    pd.testing.assert_frame_equal(again.reset_index(drop=True), manifests[3].reset_index(drop=True))
    assert not manifests[3]["split"].equals(manifests[4]["split"])


def test_given_split_moves_copies_to_the_split_holding_most_of_them(tmp_path):
    """With the data set's own train/val/test folders, a group of copies spread over two
    of them is moved whole to the folder holding most of it (a tie: train before val before
    test), every other file keeps its folder, and results.json lists the files moved."""
    root = tmp_path / "images"
    for s, split in enumerate(SPLITS):
        for c, label in enumerate("ab"):
            for i in range(4):
                save(root / split / label / f"{split}{label}{i}.png", texture(500 + 40 * s + 10 * c + i))
    train_a = save(root / "train" / "a" / "g.png", texture(700))
    train_jpeg = jpeg_copy(train_a, root / "train" / "a" / "g_copy.jpg")
    test_copy = byte_copy(train_a, root / "test" / "a" / "zz.png")  # 2 in train, 1 in test
    val_b = save(root / "val" / "b" / "h.png", texture(701))
    test_b = [lossless_resave(val_b, root / "test" / "b" / "h1.png"),
              byte_copy(val_b, root / "test" / "b" / "h2.png")]  # 1 in val, 2 in test
    train_t = save(root / "train" / "b" / "t.png", texture(702))
    val_t = jpeg_copy(train_t, root / "val" / "b" / "t.jpg", quality=65)  # a tie: train
    module = datamodule(root, tmp_path / "cache", "data=folder", "data.split.mode=given")
    where = splits_of(module.manifest)
    assert {where[p] for p in (train_a, train_jpeg, test_copy)} == {"train"}
    assert {where[p] for p in [val_b, *test_b]} == {"test"}
    assert {where[p] for p in (train_t, val_t)} == {"train"}
    moved = {test_copy, val_b, val_t}
    assert sorted(module.grouping_facts()["moved_from_given_split"]) == sorted(moved)
    for path, split in where.items():
        if path not in moved:
            assert split == Path(path).parts[-3], path


def test_identical_brain_mris_land_in_one_split(tmp_path):
    """In the real brain MRI sample (brain_mri settings, ratios since the sample is too
    small for the paper's counts) the identical No15.jpg and No17.jpg are in one split for
    seeds 0-9, and no other sample image is grouped with anything."""
    root = shared_data("brain_mri_sample")
    for seed in range(10):
        module = datamodule(root, tmp_path / "cache", "data=brain_mri", "data.split.mode=ratios", seed=seed)
        where = {Path(p).name: s for p, s in splits_of(module.manifest).items()}
        assert len(where) == 20 and where["No15.jpg"] == where["No17.jpg"], seed
        groups = module.duplicates.groups(module.manifest["path"].tolist())
        assert [[Path(p).name for p in g] for g in groups] == [["No15.jpg", "No17.jpg"]]


@pytest.fixture
def conflicting_folder(tmp_path) -> dict:
    """Class folders with a group of copies under both classes (byte copy in b/, JPEG copy
    in a/) and a same-class group."""
    root = tmp_path / "images"
    a = [save(root / "a" / f"a{i}.png", texture(800 + i)) for i in range(12)]
    b = [save(root / "b" / f"b{i}.png", texture(900 + i)) for i in range(12)]
    conflict = [a[0], byte_copy(a[0], root / "b" / "zz_same.png"), jpeg_copy(a[0], root / "a" / "a0.jpg")]
    same_class = [b[1], byte_copy(b[1], root / "b" / "b1_copy.png")]
    return {"root": root, "conflict": conflict, "same_class": same_class,
            "paths": sorted(str(p) for p in root.rglob("*") if p.is_file())}


def test_copies_under_two_labels_are_left_out_and_training_checks_pass(conflicting_folder, tmp_path):
    """An image filed under both classes (with a third copy) is left out of every split,
    results.json lists the whole group with its labels, and the checks before training
    pass without allow_leakage."""
    module = datamodule(conflicting_folder["root"], tmp_path / "cache", "data=folder")
    conflict = conflicting_folder["conflict"]
    assert not set(conflict) & set(module.manifest["path"])
    assert sorted(module.manifest["path"]) == sorted(set(conflicting_folder["paths"]) - set(conflict))
    listed = module.grouping_facts()["conflicting_labels"]
    assert [sorted((f["path"], f["label"]) for f in g) for g in listed] == [
        sorted((p, Path(p).parent.name) for p in conflict)]
    facts = check_before_training(module)
    assert "allowed_leakage" not in facts
    where = splits_of(module.manifest)
    assert len({where[p] for p in conflicting_folder["same_class"]}) == 1


def test_keeping_conflicting_copies_stops_the_checks_naming_the_setting(conflicting_folder, tmp_path):
    """With data.duplicates.exclude_conflicting_labels=false the copies stay (together, in
    one split) and the checks before training stop with one sentence that names the
    setting that leaves them out."""
    module = datamodule(conflicting_folder["root"], tmp_path / "cache", "data=folder",
                        "data.duplicates.exclude_conflicting_labels=false")
    where = splits_of(module.manifest)
    assert len({where[p] for p in conflicting_folder["conflict"]}) == 1
    assert module.grouping_facts()["conflicting_labels"] == []
    with pytest.raises(DataError) as stop:
        check_before_training(module)
    sentence = str(stop.value)
    assert "data.duplicates.exclude_conflicting_labels=true" in sentence
    assert "\n" not in sentence and sentence.endswith(".") and sentence[0].isupper()


def test_without_grouping_copies_cross_splits_and_the_checks_stop(same_class_folder, tmp_path):
    """With data.split.group_duplicates=false copies are split like distinct images, so
    some planted group crosses two splits, and the checks before training stop with one
    sentence that names data.split.group_duplicates=true."""
    groups = same_class_folder["groups"]
    for seed in range(5):
        module = datamodule(same_class_folder["root"], tmp_path / "cache", "data=folder",
                            "data.split.group_duplicates=false", seed=seed)
        where = splits_of(module.manifest)
        if any(len({where[p] for p in g}) > 1 for g in groups):
            break
    else:
        pytest.fail("no planted group crossed splits in 5 seeds without grouping")
    with pytest.raises(DataError) as stop:
        check_before_training(module)
    sentence = str(stop.value)
    assert "data.split.group_duplicates=true" in sentence
    assert "\n" not in sentence and sentence.endswith(".")
