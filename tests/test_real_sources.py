"""Sources of the published data sets: their layouts and quirks, the studies' splits, and
one sentence for a missing or wrong data folder. About 10 s."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
from conftest import REPO, compose_config, shared_data, write_gray

from medrepro.core.errors import ConfigError, DataError

PAPER_COUNTS = {"train": {"NORMAL": 790, "PNEUMONIA": 2140}, "val": {"NORMAL": 593, "PNEUMONIA": 1833},
                "test": {"NORMAL": 200, "PNEUMONIA": 300}}
KAGGLE_SPLITS = {"train": (1341, 3875), "val": (8, 8), "test": (234, 390)}  # NORMAL, PNEUMONIA


def kaggle_names(normal: int, pneumonia: int, first_patient: int = 1):
    """Kaggle-style file names: 1-3 images per patient, both NORMAL naming schemes."""
    names = {"NORMAL": [], "PNEUMONIA": []}
    patient = first_patient
    while len(names["NORMAL"]) < normal:
        prefix = f"IM-{patient:04d}" if patient % 2 else f"NORMAL2-IM-{patient:04d}"
        for k in range(1 + patient % 2):
            names["NORMAL"].append(f"{prefix}-{k + 1:04d}.jpeg")
        patient += 1
    while len(names["PNEUMONIA"]) < pneumonia:
        for k, kind in enumerate(("bacteria", "virus", "bacteria")[: 1 + patient % 3]):
            names["PNEUMONIA"].append(f"person{patient}_{kind}_{patient * 3 + k}.jpeg")
        patient += 1
    return {label: files[:count] for (label, files), count in zip(names.items(), (normal, pneumonia))}


def kaggle_tree(root, splits, touch_only=True):
    first = 1
    for split, (normal, pneumonia) in splits.items():
        for label, files in kaggle_names(normal, pneumonia, first).items():
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for name in files:
                if touch_only:
                    (folder / name).touch()
                else:
                    write_gray(folder / name, 60 + 7 * len(name) % 150 + hash(name) % 40, size=8)
        first += 10000
    return root


@pytest.fixture(scope="module")
def full_kaggle(tmp_path_factory):
    """The 5,856 Kaggle file names (empty files) in chest_xray/chest_xray, as some archives
    unpack, with macOS debris beside them."""
    root = tmp_path_factory.mktemp("kaggle")
    kaggle_tree(root / "chest_xray" / "chest_xray", KAGGLE_SPLITS)
    (root / "__MACOSX" / "chest_xray" / "train" / "NORMAL").mkdir(parents=True)
    (root / "__MACOSX" / "chest_xray" / "train" / "NORMAL" / "._IM-0001-0001.jpeg").touch()
    (root / "chest_xray" / "chest_xray" / "train" / "NORMAL" / ".DS_Store").touch()
    return root


def source(data: str, root, *overrides):
    """The source that ``data=<data>`` (conf/data/<data>.yaml, with ``overrides``) reads
    ``root`` with: the published data sets differ only in these settings."""
    import hydra

    cfg = compose_config([f"data={data}", f"data.root={root}", *overrides], root / "run")
    return hydra.utils.instantiate(cfg.data.source)(root=root)


def datamodule(tmp_path, overrides):
    import hydra

    cfg = compose_config(overrides, tmp_path / "run")
    module = hydra.utils.instantiate(cfg.data, augment=None, _convert_="all")
    module.setup("fit")
    return module


def test_kaggle_layout_doubly_nested_with_debris(full_kaggle):
    records = source("pneumonia", full_kaggle).records()
    assert len(records) == 5856
    assert sum(r.label == "NORMAL" for r in records) == 1583
    assert all(r.patient_id is not None for r in records)
    assert {r.given_split for r in records} == {"train", "val", "test"}


@pytest.mark.parametrize("grouped", [True, False])
def test_paper_split_counts_are_exact(full_kaggle, tmp_path, grouped):
    module = datamodule(tmp_path, ["data=pneumonia", f"data.root={full_kaggle}",
                                   f"data.split.group_by_patient={str(grouped).lower()}"])
    manifest = module.manifest
    counts = manifest.groupby(["split", "label"]).size().unstack().to_dict(orient="index")
    assert counts == PAPER_COUNTS
    spread = manifest.groupby("patient_id")["split"].nunique()
    if grouped:
        assert spread.max() == 1
    else:
        assert spread.max() > 1  # the papers' image-level split puts patients in two splits


def test_kaggle_outer_copy_wins_over_the_nested_one(tmp_path):
    kaggle_tree(tmp_path / "chest_xray", {"train": (3, 3), "val": (1, 1), "test": (2, 2)})
    shutil.copytree(tmp_path / "chest_xray", tmp_path / "chest_xray" / "chest_xray")
    records = source("pneumonia", tmp_path).records()
    assert len(records) == 12 and not any("chest_xray/chest_xray" in r.path for r in records)
    assert source("pneumonia", tmp_path / "chest_xray" / "chest_xray").records()[0].path.count(
        "chest_xray") == 2


def test_kaggle_patient_ids():
    names = ["person12_bacteria_3.jpeg", "person12_virus_40.jpeg", "IM-0115-0001.jpeg",
             "NORMAL2-IM-0115-0002.jpeg"]
    import re

    regex = compose_config(["data=pneumonia"], REPO / "run").data.source.patient_id_regex
    ids = [re.match(regex, n).group(1) for n in names]
    assert ids == ["person12", "person12", "IM-0115", "NORMAL2-IM-0115"]


def test_real_pneumonia_sample_in_kaggle_layout(tmp_path):
    sample = shared_data("pneumonia_sample")
    for split in ("train", "val", "test"):
        shutil.copytree(sample, tmp_path / "chest_xray" / split)
    records = source("pneumonia", tmp_path).records()
    assert len(records) == 3 * 48
    patients = {r.patient_id for r in records if r.label == "PNEUMONIA"}
    assert "person393" in patients and len(patients) < 24


@pytest.mark.parametrize(
    "make_source, expected",
    [
        (lambda root: source("pneumonia", root), "so that {root}/train/NORMAL exists, or run with data=demo_pneumonia."),
        (lambda root: source("brain_mri", root), "so that {root}/no exists, or run with data=demo_brain_mri."),
        (lambda root: source("cardiomegaly", root), "so that {root}/normal exists, or run with data=demo_cardiomegaly."),
        (lambda root: source("covid3", root), "so that {root}/CXR_ijcar_mix/normal exists"),
    ],
)
def test_missing_or_wrong_data_is_one_sentence(tmp_path, make_source, expected):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as error:
        make_source(missing).records()
    message = str(error.value)
    assert f"not found at {missing}. " in message and expected.format(root=missing) in message
    assert "Download it from https://www.kaggle.com/datasets/" in message or "from your PACS" in message
    wrong = tmp_path / "wrong"
    write_gray(wrong / "images" / "a.png", 10)
    with pytest.raises(DataError, match="does not have the expected layout .*found images"):
        make_source(wrong).records()


def test_brain_mri_archive_with_both_copies_counts_each_image_once(tmp_path):
    for top in ("", "brain_tumor_dataset"):
        for name in ("Y1.jpg", "Y2.JPG", "y 3.jpeg"):
            write_gray(tmp_path / top / "yes" / name, 200)
        for name in ("no 1.jpg", "7 no.jpeg", "No12.JPG"):
            write_gray(tmp_path / top / "no" / name, 20)
    (tmp_path / "yes" / "notes.txt").write_text("x")
    (tmp_path / "no" / "._no 1.jpg").write_bytes(b"mac")
    both = source("brain_mri", tmp_path).records()
    assert len(both) == 6 and not any("brain_tumor_dataset" in r.path for r in both)
    shutil.rmtree(tmp_path / "yes")
    shutil.rmtree(tmp_path / "no")
    inner = source("brain_mri", tmp_path).records()
    assert len(inner) == 6 and all("brain_tumor_dataset" in r.path for r in inner)
    assert {r.label for r in inner} == {"no", "yes"}


def test_real_brain_mri_sample_and_study_2_pipeline(tmp_path):
    root = shared_data("brain_mri_sample")
    assert len(source("brain_mri", root).records()) == 20
    module = datamodule(tmp_path, ["data=brain_mri", f"data.root={root}", "data.split.mode=ratios",
                                   "data.image_size=96", "data.cache.enabled=false"])
    item = module.datasets["train"][0]
    assert tuple(item["image"].shape) == (1, 96, 96)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0


def test_cardiomegaly_tiff_and_dicom_and_the_papers_positive_class(tmp_path):
    from test_dicom import write_dicom

    (tmp_path / "normal").mkdir()
    (tmp_path / "cardiomegaly").mkdir()
    for i in range(6):
        tifffile.imwrite(tmp_path / "normal" / f"n{i}.tif", np.full((8, 8), 1000 * (i + 1), np.uint16))
        write_dicom(tmp_path / "cardiomegaly" / f"c{i}.dcm", np.full((8, 8), 100 * (i + 1), np.uint16))
    tifffile.imwrite(tmp_path / "normal" / "eight_bit.tiff", np.full((8, 8), 7, np.uint8))
    module = datamodule(tmp_path, ["data=cardiomegaly", f"data.root={tmp_path}", "data.split.mode=ratios",
                                   "data.positive_class=normal", "data.image_size=8", "data.cache.enabled=false"])
    assert module.class_names == ["cardiomegaly", "normal"]  # normal = 1, study 1's convention
    assert len(module.manifest) == 13
    assert {p.rsplit(".", 1)[1] for p in module.manifest["path"]} == {"tif", "tiff", "dcm"}


def test_covid3_twins_and_variant(tmp_path):
    for twin, value in (("CXR_ijcar_mix", 50), ("Enh_ijcar_mix", 200)):
        for label in ("normal", "pneumonia", "COVID-19"):
            for i in range(4):
                write_gray(tmp_path / "largest" / twin / label / f"{label}_{i}.png", value + 4 * i + len(label))
    cxr = source("covid3", tmp_path, "data.variant=cxr").records()
    enh = source("covid3", tmp_path, "data.variant=enh").records()
    assert len(cxr) == len(enh) == 12
    assert all("CXR_ijcar_mix" in r.path for r in cxr) and all("Enh_ijcar_mix" in r.path for r in enh)
    assert [r.path.split("/")[-1] for r in cxr] == [r.path.split("/")[-1] for r in enh]
    for variant, channels in (("cxr", 1), ("enh", 3)):
        module = datamodule(tmp_path, ["data=covid3", f"data.root={tmp_path}", f"data.variant={variant}",
                                       "data.cache.enabled=false", "data.image_size=8",
                                       "data.split.paper.ratios={train: 0.5, val: 0.25, test: 0.25}"])
        assert module.channels == channels and module.variant == variant
        assert module.class_names == ["normal", "pneumonia", "COVID-19"]
    with pytest.raises(ConfigError, match="data.variant must be one of cxr, enh"):
        source("covid3", tmp_path, "data.variant=ct")


def test_covid3_plain_class_folders_need_no_twins(tmp_path):
    for label in ("normal", "pneumonia", "COVID-19"):
        write_gray(tmp_path / label / "a.png", 9)
    assert len(source("covid3", tmp_path, "data.variant=cxr").records()) == 3
    with pytest.raises(DataError, match="Enh_ijcar_mix/normal exists"):
        source("covid3", tmp_path, "data.variant=enh").records()


def test_a_fixed_layout_may_only_be_confirmed(tmp_path):
    kaggle_tree(tmp_path / "chest_xray", {"train": (2, 2), "val": (1, 1), "test": (1, 1)})
    assert len(source("pneumonia", tmp_path, "data.source.layout=split_folders").records()) == 8
    with pytest.raises(ConfigError, match="always has the layout split_folders; remove data.source.layout"):
        source("pneumonia", tmp_path, "data.source.layout=class_folders")


def test_cardiomegaly_export_in_split_folders(tmp_path):
    for split in ("train", "val", "test"):
        for label, value in (("normal", 30), ("cardiomegaly", 200)):
            write_gray(tmp_path / "export" / split / label / f"{split}_{label}.png", value)
    records = source("cardiomegaly", tmp_path / "export").records()
    assert len(records) == 6 and {r.given_split for r in records} == {"train", "val", "test"}
