"""``data.split.mode=paper`` (the default of every real data set) gives each study's own split.

Each data set is generated at its full published size, with its real layout and untidy
file names (tiny 8 x 8 images), and split by the data module itself
(``prepare_data()`` and ``setup("fit")``), as a training run would. The expected counts
are the papers' (``../shared/PAPERS.md``), typed into the tests, not read from the
configs.
About 30 s (the three-class data set has 18,219 images in each of its two twins).
"""

from __future__ import annotations

import io
import os
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import compose_config
from PIL import Image
from test_real_sources import KAGGLE_SPLITS, PAPER_COUNTS, kaggle_tree

# Study 2 (navoneel brain MRI, 98 no + 155 yes): train 163, val 50, test 40; the confusion
# matrices give the classes.
BRAIN_MRI = {"train": {"no": 60, "yes": 103}, "val": {"no": 18, "yes": 32},
             "test": {"no": 20, "yes": 20}}
# Study 1 (526 normal + 500 cardiomegaly TIFFs).
CARDIOMEGALY = {"train": {"normal": 226, "cardiomegaly": 250},
                "val": {"normal": 200, "cardiomegaly": 150},
                "test": {"normal": 100, "cardiomegaly": 100}}
# Study 5: Qi et al.'s data set (8,851 normal, 6,045 pneumonia, 3,323 COVID-19), split
# train/test 7:3, then train/val 7:3 of the training part, per class.
COVID3_SIZES = {"normal": 8851, "pneumonia": 6045, "COVID-19": 3323}


def nearest(value: Decimal) -> int:
    """The README's rounding: the nearest whole number, an exact half to the even one."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def covid3_expected() -> dict[str, dict[str, int]]:
    """Study 5's split computed from its description: test 3/10 of each class, val 3/10
    of the other 7/10; train the rest."""
    expected = {"train": {}, "val": {}, "test": {}}
    for label, n in COVID3_SIZES.items():
        test = nearest(Decimal(3) / 10 * n)
        val = nearest(Decimal(7) / 10 * Decimal(3) / 10 * n)
        expected["test"][label], expected["val"][label] = test, val
        expected["train"][label] = n - test - val
    return expected


def image_bytes(index: int, fmt: str, mode: str = "L") -> bytes:
    """An 8 x 8 image of random pixels seeded by ``index``: distinct images, which the
    split does not take for copies of one another."""
    pixels = np.random.default_rng(index).integers(0, 256, (8, 8), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def brain_mri_tree(root: Path) -> Path:
    """The navoneel archive: ``yes/`` and ``no/`` at its top level and again inside
    ``brain_tumor_dataset/``, with its file-name styles."""
    yes = [f"Y{i}.JPG" if i % 4 == 0 else f"Y{i}.jpg" for i in range(1, 156)]
    no_styles = ("no {}.jpg", "{} no.jpeg", "No{}.jpg", "N{}.JPG", "{} no.jpg")
    no = [no_styles[i % len(no_styles)].format(i) for i in range(1, 99)]
    for top in ("", "brain_tumor_dataset"):
        for label, names in (("yes", yes), ("no", no)):
            for i, name in enumerate(names):
                mode = "RGB" if i % 3 else "L"
                data = image_bytes(1000 * (label == "yes") + i, "JPEG", mode)
                write(root / top / label / name, data)
    return root


def cardiomegaly_tree(root: Path) -> Path:
    """A PACS export: ``normal/`` and ``cardiomegaly/`` of 8- and 16-bit TIFFs."""
    for label, n in (("normal", 526), ("cardiomegaly", 500)):
        (root / label).mkdir(parents=True)
        for i in range(n):
            suffix, dtype = (".tiff", np.uint8) if i % 5 == 0 else (".tif", np.uint16)
            top = np.iinfo(dtype).max  # distinct random images, seeded by class and number
            pixels = np.random.default_rng([i, label == "normal"]).integers(0, top, (8, 8), dtype=dtype)
            tifffile.imwrite(root / label / f"{label}_{i:04d}{suffix}", pixels)
    return root


def covid3_tree(root: Path) -> Path:
    """Qi et al.'s twin folders, one below ``data.root`` as the Kaggle archive unpacks:
    the X-rays in ``CXR_ijcar_mix/`` and their 3-channel versions, same names, in
    ``Enh_ijcar_mix/``. The images of a class are hard links to one file (36,438 links are
    quicker to make than files); being copies of one image, they are split with
    ``data.split.group_duplicates=false`` (see :data:`UNGROUPED`)."""
    base = root / "largest-covid19-dataset"
    for twin, mode in (("CXR_ijcar_mix", "L"), ("Enh_ijcar_mix", "RGB")):
        for c, (label, n) in enumerate(COVID3_SIZES.items()):
            folder = base / twin / label
            first = folder / f"{label} (1).png"
            write(first, image_bytes(c, "PNG", mode))
            for i in range(2, n + 1):
                os.link(first, folder / f"{label} ({i}).png")
    return root


# copies are kept in one split by default; covid3's generated classes are each one image
UNGROUPED = {"covid3": ("data.split.group_duplicates=false",)}
TREES = {"brain_mri": brain_mri_tree, "cardiomegaly": cardiomegaly_tree, "covid3": covid3_tree,
         "pneumonia": lambda root: kaggle_tree(root / "chest_xray", KAGGLE_SPLITS)}
EXPECTED = {  # split counts per class, and the data set's size
    "brain_mri": (BRAIN_MRI, 253),
    "cardiomegaly": (CARDIOMEGALY, 1026),
    "covid3": (covid3_expected(), sum(COVID3_SIZES.values())),
    "pneumonia": (PAPER_COUNTS, 5856),
}


@pytest.fixture(scope="module")
def paper_split(tmp_path_factory):
    """``paper_split(data, *overrides)``: the manifest that the data module makes for
    ``data=<data>`` (its default split, ``paper``) on the generated full data set; with
    ``fresh=True`` from a new data module even if the same call was made before."""
    roots: dict[str, Path] = {}
    made: dict[tuple, pd.DataFrame] = {}

    def make(data: str, *overrides: str, fresh: bool = False) -> pd.DataFrame:
        if (data, overrides) in made and not fresh:
            return made[data, overrides]
        if data not in roots:
            roots[data] = TREES[data](tmp_path_factory.mktemp(data))
        run_dir = tmp_path_factory.mktemp("run")
        cfg = compose_config([f"data={data}", f"data.root={roots[data]}", "data.cache.enabled=false",
                              "data.loader.num_workers=0", *UNGROUPED.get(data, ()), *overrides],
                             run_dir)
        assert cfg.data.split.mode == "paper"
        module = hydra.utils.instantiate(cfg.data, augment=None, _convert_="all")
        module.prepare_data()
        module.setup("fit")
        made[data, overrides] = module.manifest
        return module.manifest

    return make


def counts(manifest: pd.DataFrame) -> dict[str, dict[str, int]]:
    table = manifest.groupby(["split", "label"]).size().unstack(fill_value=0)
    return {split: {k: int(v) for k, v in row.items() if v} for split, row in table.iterrows()}


def names(manifest: pd.DataFrame) -> dict[str, str]:
    """File name -> split."""
    return dict(zip(manifest["path"].map(lambda p: Path(p).name), manifest["split"]))


def assert_seeded(first: pd.DataFrame, again: pd.DataFrame, other: pd.DataFrame) -> None:
    """``again`` (same seed) is ``first``; ``other`` (another seed) moves many images."""
    pd.testing.assert_frame_equal(first, again)
    assert list(other["path"]) == list(first["path"])
    moved = (other["split"] != first["split"]).mean()
    assert moved > 0.2, f"only {moved:.0%} of the images changed split with another seed"


@pytest.mark.parametrize("data", ["brain_mri", "cardiomegaly", "pneumonia"])
def test_paper_split_has_the_studys_counts_and_is_seeded(data, paper_split):
    """Every image of the full data set is in exactly one of train/val/test, with the
    study's count per split and class; the same seed gives the same split, another seed
    another split with the same counts."""
    expected, total = EXPECTED[data]
    first = paper_split(data)
    assert counts(first) == expected  # no 'unused' images either: the studies used them all
    assert len(first) == total and first["path"].is_unique
    other = paper_split(data, "seed=1")
    assert counts(other) == expected
    assert_seeded(first, paper_split(data, fresh=True), other)


def test_covid3_paper_split_is_7_3_then_7_3_and_the_same_for_cxr_and_enh(paper_split):
    """Study 5's split of the 18,219 images (test 0.30, val 0.21, train 0.49 per class),
    seeded. It compares CXR with ENH, so both arms are trained and tested on the same
    X-rays: a file name is in the same split in both twins (a second, independent data
    module with the same seed: the same-seed check)."""
    expected, total = EXPECTED["covid3"]
    cxr = paper_split("covid3")
    assert counts(cxr) == expected
    assert len(cxr) == total and cxr["path"].is_unique
    assert cxr["path"].str.contains("/CXR_ijcar_mix/").all()
    enh = paper_split("covid3", "data.variant=enh")
    assert enh["path"].str.contains("/Enh_ijcar_mix/").all()
    assert names(enh) == names(cxr)
    same_paths = enh.assign(path=enh["path"].str.replace("/Enh_ijcar_mix/", "/CXR_ijcar_mix/"))
    other = paper_split("covid3", "seed=1")
    assert counts(other) == expected
    assert_seeded(cxr, same_paths, other)


def test_brain_mri_archive_copy_inside_brain_tumor_dataset_is_not_counted(paper_split):
    """The archive holds each image twice; a file name in two splits would be the same
    picture in training and evaluation."""
    manifest = paper_split("brain_mri")
    assert not manifest["path"].str.contains("brain_tumor_dataset").any()
    assert len(names(manifest)) == len(manifest) == 253
    assert {Path(p).suffix for p in manifest["path"]} == {".jpg", ".JPG", ".jpeg"}


def test_covid3_expected_counts_are_the_papers_fractions():
    """The oracle itself, by hand: 0.3 x 6,045 = 1,813.5 goes to the even 1,814; every
    count is within one image of 0.49, 0.21 and 0.30 of its class."""
    expected = covid3_expected()
    assert expected["test"] == {"normal": 2655, "pneumonia": 1814, "COVID-19": 997}
    assert expected["val"] == {"normal": 1859, "pneumonia": 1269, "COVID-19": 698}
    for label, n in COVID3_SIZES.items():
        for split, fraction in (("train", 0.49), ("val", 0.21), ("test", 0.30)):
            assert abs(expected[split][label] - fraction * n) <= 1, (split, label)
