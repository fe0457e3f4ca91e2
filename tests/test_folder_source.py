import pytest
from conftest import shared_data, write_gray

from medrepro.core.errors import DataError
from medrepro.datamodules.sources.folder import FolderSource


def test_class_folders_with_quirks_are_scanned(class_folders):
    (class_folders / "cat" / ".hidden.png").write_bytes(b"x")
    (class_folders / "cat" / "notes.txt").write_text("x")
    write_gray(class_folders / "__MACOSX" / "cat" / "._a.png", 1)
    write_gray(class_folders / "dog" / "sub" / "UPPER.PNG", 9)
    records = FolderSource(class_folders, patient_id_regex=r"^(p\w+?)_").records()
    assert len(records) == 21
    assert {r.label for r in records} == {"cat", "dog"}
    assert records[0].patient_id == "pcat0" and records[0].given_split is None
    assert sum(r.patient_id is None for r in records) == 1  # UPPER.PNG matches no patient


def test_split_folders_keep_the_given_split(tmp_path):
    for split in ("train", "val", "test"):
        for label in ("NORMAL", "PNEUMONIA"):
            write_gray(tmp_path / split / label / f"{split}_{label}.jpeg", 50)
    records = FolderSource(tmp_path).records()
    assert sorted((r.given_split, r.label) for r in records) == sorted(
        (s, c) for s in ("train", "val", "test") for c in ("NORMAL", "PNEUMONIA")
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: None, "Data folder not found"),
        (lambda root: write_gray(root / "only" / "a.png", 1), "Only 1 class folder"),
        (lambda root: (write_gray(root / "a" / "a.png", 1), (root / "b").mkdir()), "contains no images"),
    ],
)
def test_user_mistakes_stop_with_one_sentence(tmp_path, make, message):
    root = tmp_path / "data"
    if message != "Data folder not found":
        root.mkdir()
    make(root)
    with pytest.raises(DataError, match=message):
        FolderSource(root).records()


def test_named_classes_must_exist(class_folders):
    with pytest.raises(DataError, match="bird"):
        FolderSource(class_folders, class_names=["cat", "bird"]).records()


def test_real_pneumonia_sample_patient_ids():
    root = shared_data("pneumonia_sample")
    source = FolderSource(root, patient_id_regex=r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)")
    records = source.records()
    assert len(records) == 48
    by_patient = {}
    for r in records:
        by_patient.setdefault(r.patient_id, set()).add(r.label)
    assert all(len(labels) == 1 for labels in by_patient.values())
    assert len(by_patient) < 48  # several patients have more than one image
    assert all(r.patient_id is not None for r in records)
