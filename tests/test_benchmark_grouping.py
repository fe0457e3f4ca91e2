"""benchmark.py --grouping on a few hundred images: the planted copies are found, distinct
images stay apart and the split keeps copies together, checked against the planted list
(the truth the generator wrote) with scipy's connected components, not with the benchmark's
own counting; and the command-line options (seconds)."""

import filecmp
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from benchmarks.harness.grouping import (
    COPY_KINDS,
    check_relation,
    make_images,
    measure_grouping,
)
from benchmarks.harness.paths import REPOSITORY_ROOT
from medrepro.core.errors import DataError
from medrepro.datamodules.audit.data_audit import inspect_manifest
from medrepro.datamodules.audit.duplicate_relation import (
    DuplicateRelation,
    NearPair,
    find_duplicates,
)
from medrepro.datamodules.audit.perceptual_hash import hamming_distance
from medrepro.datamodules.splitting.split import MANIFEST_COLUMNS, make_split

IMAGES = 300


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def components(paths, links) -> dict[str, int]:
    index = {p: i for i, p in enumerate(paths)}
    rows, cols = zip(*[(index[a], index[b]) for a, b in links]) if links else ((), ())
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(paths), len(paths)))
    return dict(zip(paths, connected_components(graph, directed=False)[1]))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("grouping") / "images", IMAGES, seed=3)


def test_the_planted_copies_are_what_the_list_says(planted):
    """The ground truth itself: each copy is of the kind the list names."""
    kinds = {c["kind"] for c in planted.copies}
    assert kinds == set(COPY_KINDS) and len(planted.copies) == round(0.04 * IMAGES)
    assert len(planted.records) == IMAGES + len(planted.copies)
    for copy in planted.copies:
        original, duplicate = pixels(copy["original"]), pixels(copy["copy"])
        same_bytes = filecmp.cmp(copy["original"], copy["copy"], shallow=False)
        assert same_bytes == (copy["kind"] == "identical bytes")
        if copy["kind"] in ("identical bytes", "lossless re-save"):
            np.testing.assert_array_equal(original, duplicate)
        elif copy["kind"] == "JPEG q85":
            assert duplicate.shape == original.shape
            assert 0 < np.abs(duplicate.astype(int) - original).mean() < 3
        else:
            factor = 0.75 if copy["kind"] == "resized 0.75x" else 1.25
            assert duplicate.shape[0] == round(original.shape[0] * factor)
    families = {planted.family[r.path] for r in planted.records}
    assert len(families) == IMAGES  # every distinct image is its own family


def test_copies_found_and_distinct_images_kept_apart(planted, tmp_path):
    frame = pd.DataFrame([(r.path, r.label, r.patient_id, None) for r in planted.records],
                         columns=MANIFEST_COLUMNS)
    table = inspect_manifest(frame, quick=False, store_dir=tmp_path)
    relation = find_duplicates(table, None)
    paths = [r.path for r in planted.records]
    component = components(paths, relation.links())
    for copy in planted.copies:
        assert component[copy["original"]] == component[copy["copy"]], copy
    members: dict[int, set[int]] = {}
    for path in paths:
        members.setdefault(component[path], set()).add(planted.family[path])
    assert all(len(families) == 1 for families in members.values())
    # the look-alikes are a real test of the pixel comparison: hash candidates, rejected
    hashes = dict(zip(table["path"], table["phash"]))
    rejected = {frozenset((p.first, p.second)) for p in relation.rejected}
    assert planted.lookalikes
    for first, second in planted.lookalikes:
        assert hamming_distance(int(hashes[first]), int(hashes[second])) <= 8
        assert frozenset((first, second)) in rejected
    manifest = make_split(planted.records, ["a", "b"], ratios={"train": 0.7, "val": 0.15,
                                                               "test": 0.15},
                          links=relation.links())
    split = dict(zip(manifest["path"], manifest["split"]))
    for copy in planted.copies:
        assert split[copy["original"]] == split[copy["copy"]]


def test_the_benchmark_counts_misses_and_wrong_groups(planted):
    """The benchmark's own accounting, on relations whose answers are known: one that finds
    nothing, and one that finds the copies of two kinds and joins a look-alike pair."""
    manifest = make_split(planted.records, ["a", "b"], ratios={"train": 0.7, "val": 0.15,
                                                               "test": 0.15})
    nothing = check_relation(planted, DuplicateRelation(), manifest)
    assert nothing["recall"] == 0 and nothing["planted_found"] == 0
    assert nothing["distinct_images_grouped"] == 0 and nothing["copy_groups"] == 0
    kept = [c for c in planted.copies if c["kind"] in ("JPEG q85", "resized 1.25x")]
    first, second = planted.lookalikes[0]
    wrong = DuplicateRelation(confirmed=[NearPair(c["original"], c["copy"], 1, 0.99)
                                         for c in kept] + [NearPair(first, second, 4, 0.95)])
    figures = check_relation(planted, wrong, manifest)
    assert figures["planted_found"] == len(kept)
    assert figures["recall"] == pytest.approx(len(kept) / len(planted.copies))
    assert figures["recall_by_kind"]["JPEG q85"] == 1 and figures["recall_by_kind"][
        "identical bytes"] == 0
    assert figures["lookalikes_confirmed"] == 1
    assert figures["distinct_images_grouped"] == 2
    assert figures["groups_joining_distinct_images"] == 1
    split = dict(zip(manifest["path"], manifest["split"]))
    apart = sum(split[a] != split[b] for a, b in [(c["original"], c["copy"]) for c in kept]
                + [(first, second)])
    assert figures["groups_across_splits"] == apart


def test_measure_grouping_reports_the_figures(tmp_path):
    results = measure_grouping(tmp_path, IMAGES, seed=3, log=lambda message: None)
    copies = round(0.04 * IMAGES)
    assert results["files"] == IMAGES + copies
    planted = results["planted_copies"]
    assert set(planted) == set(COPY_KINDS) and sum(planted.values()) == copies
    assert max(planted.values()) - min(planted.values()) <= 1  # the kinds in turn
    assert results["recall"] == 1.0 and results["planted_found"] == copies
    assert results["distinct_images_grouped"] == 0 and results["groups_across_splits"] == 0
    assert results["lookalikes_confirmed"] == 0
    assert results["copy_groups"] == copies  # one original and one copy each
    exact = planted["identical bytes"] + planted["lossless re-save"]
    assert results["exact_groups"] == exact
    assert results["confirmed"] == copies - exact
    assert results["rejected"] >= results["lookalike_pairs"] > 0
    assert results["same_relation_when_remembered"]
    seconds = results["seconds"]
    assert seconds["grouping_remembered"] == pytest.approx(
        seconds["remembered_inspection"] + seconds["find_duplicates_remembered"]
        + seconds["make_split"], abs=2e-3)
    for step in ("first_inspection", "make_split", "grouping_first"):
        rate = results["images_per_s"][step]  # from seconds before their rounding to 1 ms
        assert results["files"] / (seconds[step] + 5e-4) <= rate
        assert rate <= results["files"] / max(seconds[step] - 5e-4, 1e-9)


def test_similarity_without_the_sample_images_says_so(tmp_path):
    from benchmarks.harness.similarity import measure_similarity

    with pytest.raises(DataError, match="sample images"):
        measure_similarity(tmp_path / "absent")


def test_grouping_option_adds_its_figures_to_the_results_file(tmp_path):
    out = tmp_path / "benchmark.json"
    out.write_text(json.dumps({"data_path": [{"pipeline": "naive"}]}))
    done = subprocess.run([sys.executable, "benchmark.py", "--grouping", "--images", "60",
                           "--out", str(out)], cwd=REPOSITORY_ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["data_path"] == [{"pipeline": "naive"}]  # kept
    assert results["grouping"]["distinct_images"] == 60
    assert results["grouping"]["machine"]["cores"] >= 1
    assert "| first inspection (decode + hashes, into the store) |" in done.stdout
    bad = subprocess.run([sys.executable, "benchmark.py", "--grouping", "--images", "1",
                          "--out", str(out)], cwd=REPOSITORY_ROOT, capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 1 and bad.stderr.strip() == "--images must be at least 2, not 1."
