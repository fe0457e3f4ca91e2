"""Splitting images into train/val/test: seeds, counts, ratios and their rounding, patients."""

from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pandas as pd
import pytest

from medrepro.core.errors import ConfigError, DataError
from medrepro.core.records import ImageRecord
from medrepro.datamodules.splitting.split import make_split, split_counts


def records_with_patients(n_patients=40, images=(1, 2, 3)):
    """Patients with 1-3 images each; one patient in three is class b."""
    records = []
    for p in range(n_patients):
        label = "a" if p % 3 else "b"
        for k in range(images[(p // 3) % len(images)]):
            records.append(ImageRecord(f"/d/{label}/pat{p}_{k}.png", label, f"pat{p}"))
    return records


def test_same_seed_same_manifest_other_seed_other_manifest():
    records = records_with_patients()
    first = make_split(records, ["a", "b"], "ratios", ratios={"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    again = make_split(list(reversed(records)), ["a", "b"], "ratios",
                       ratios={"train": 0.6, "val": 0.2, "test": 0.2}, seed=3)
    other = make_split(records, ["a", "b"], "ratios", ratios={"train": 0.6, "val": 0.2, "test": 0.2}, seed=4)
    pd.testing.assert_frame_equal(first, again)
    assert not first["split"].equals(other["split"])


def test_counts_are_exact_per_class_without_grouping():
    records = records_with_patients()
    counts = {"train": {"a": 20, "b": 10}, "val": {"a": 8, "b": 4}, "test": {"a": 5, "b": 6}}
    manifest = make_split(records, ["a", "b"], "counts", counts=counts, seed=0)
    table = split_counts(manifest)
    for split, per_class in counts.items():
        for label, n in per_class.items():
            assert table.loc[split, label] == n
    n_a = sum(r.label == "a" for r in records)
    n_b = len(records) - n_a
    assert (manifest["split"] == "unused").sum() == (n_a - 33) + (n_b - 20)


def test_ratios_are_stratified():
    records = [ImageRecord(f"/x/{i}.png", "a" if i < 80 else "b") for i in range(100)]
    manifest = make_split(records, ["a", "b"], "ratios", ratios={"train": 0.7, "val": 0.1, "test": 0.2})
    table = split_counts(manifest)
    assert table.loc["train"].tolist() == [56, 14]
    assert table.loc["val"].tolist() == [8, 2]
    assert table.loc["test"].tolist() == [16, 4]


@pytest.mark.parametrize("seed", range(5))
def test_no_patient_in_two_splits_and_counts_close(seed):
    records = records_with_patients(n_patients=90)
    counts = {"train": {"a": 60, "b": 30}, "val": {"a": 20, "b": 10}, "test": {"a": 20, "b": 10}}
    manifest = make_split(records, ["a", "b"], "counts", counts=counts, group_by_patient=True, seed=seed)
    used = manifest[manifest["split"] != "unused"]
    assert used.groupby("patient_id")["split"].nunique().max() == 1
    table = split_counts(manifest)
    for split, per_class in counts.items():
        for label, n in per_class.items():
            assert abs(table.loc[split, label] - n) <= 2, (split, label, table)


def test_grouping_by_patient_changes_an_image_level_split():
    records = records_with_patients(n_patients=60)
    ratios = {"train": 0.6, "val": 0.2, "test": 0.2}
    image_level = make_split(records, ["a", "b"], "ratios", ratios=ratios, seed=1)
    assert image_level.groupby("patient_id")["split"].nunique().max() > 1  # leakage happens
    grouped = make_split(records, ["a", "b"], "ratios", ratios=ratios, group_by_patient=True, seed=1)
    assert grouped.groupby("patient_id")["split"].nunique().max() == 1
    assert (grouped["split"] != "unused").all()


def test_given_split_is_kept():
    records = [ImageRecord(f"/{s}/{c}/{i}.png", c, None, s) for s in ("train", "val", "test")
               for c in ("x", "y") for i in range(3)]
    manifest = make_split(records, ["x", "y"], "given")
    assert (manifest["split"] == manifest["path"].str.split("/").str[1]).all()


def test_impossible_counts_and_bad_ratios_are_user_errors():
    records = records_with_patients()
    with pytest.raises(DataError, match="ask for 999 'a' images"):
        make_split(records, ["a", "b"], "counts", counts={"train": {"a": 999}})
    with pytest.raises(ConfigError, match="add up to 1"):
        make_split(records, ["a", "b"], "ratios", ratios={"train": 0.5, "val": 0.2, "test": 0.2})
    with pytest.raises(ConfigError, match="unknown class"):
        make_split(records, ["a", "b"], "counts", counts={"train": {"zebra": 1}})
    with pytest.raises(ConfigError, match="train/, val/ and test/"):
        make_split(records, ["a", "b"], "given")


def documented_ratio_counts(n: int, ratios: dict[str, str]) -> dict[str, int]:
    """The README's rule, computed independently with decimal arithmetic: val and test get
    their fraction of n rounded to the nearest whole number (an exact half to the even
    one), train the rest."""
    def nearest(fraction: str) -> int:
        return int((Decimal(fraction) * n).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))

    val, test = nearest(ratios["val"]), nearest(ratios["test"])
    return {"train": n - val - test, "val": val, "test": test}


@pytest.mark.parametrize(
    "sizes, ratios",
    [
        ({"a": 7, "b": 7}, {"train": "0.7", "val": "0.15", "test": "0.15"}),  # 1.05 -> 1
        ({"a": 13, "b": 11, "c": 7}, {"train": "0.7", "val": "0.15", "test": "0.15"}),  # 1.95, 1.65
        ({"a": 10, "b": 30, "c": 50}, {"train": "0.7", "val": "0.15", "test": "0.15"}),  # halves
        ({"a": 150, "b": 250}, {"train": "0.86", "val": "0.07", "test": "0.07"}),  # 10.5, 17.5
        ({"a": 6045, "b": 3323}, {"train": "0.49", "val": "0.21", "test": "0.30"}),  # 1813.5
        ({"a": 9, "b": 4}, {"train": "0.5", "val": "0.3", "test": "0.2"}),  # 2.7, 1.2, 0.8
    ],
)
def test_ratio_split_counts_follow_the_documented_rounding(sizes, ratios):
    """Counts that do not divide exactly: every image is assigned, each class keeps its
    size, each split is within one image of its share (val and test within half), and the
    counts are exactly the README's rule."""
    records = [ImageRecord(f"/d/{label}/{i:05d}.png", label) for label, n in sizes.items()
               for i in range(n)]
    manifest = make_split(records, list(sizes), "ratios",
                          ratios={k: float(v) for k, v in ratios.items()}, seed=7)
    assert (manifest["split"] != "unused").all()
    table = split_counts(manifest)
    for label, n in sizes.items():
        got = {split: int(table.loc[split, label]) for split in ("train", "val", "test")}
        assert sum(got.values()) == n
        for split, fraction in ratios.items():
            share = Fraction(fraction) * n
            assert abs(got[split] - share) <= (1 if split == "train" else Fraction(1, 2))
        assert got == documented_ratio_counts(n, ratios), (label, n)


def test_ratio_rounding_examples_in_the_readme():
    """The README's examples: 13 images at 0.7/0.15/0.15 are 9/2/2, 30 images 22/4/4."""
    ratios = {"train": 0.7, "val": 0.15, "test": 0.15}
    for n, expected in ((13, [9, 2, 2]), (30, [22, 4, 4])):
        records = [ImageRecord(f"/d/{i}.png", "a") for i in range(n)]
        table = split_counts(make_split(records, ["a"], "ratios", ratios=ratios))
        assert table["a"].tolist() == expected
