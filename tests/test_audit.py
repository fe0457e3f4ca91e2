"""The data audit (python audit.py) and the quick checks training runs before fitting.
About 25 s (one tiny training run)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
from conftest import CONFIG_DIR, TINY_TRAINING, compose_config
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict
from PIL import Image

from medrepro.core.errors import DataError
from medrepro.datamodules.audit.data_audit import audit_data
from medrepro.datamodules.audit.preflight import check_before_training
from medrepro.jobs.auditing import audit
from medrepro.jobs.training import train


def xray(seed: int, size: int = 96) -> np.ndarray:
    """A distinct 8-bit image (each seed its own structure): a smooth random field with
    film grain, the fine texture by which a copy is told from a look-alike."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((6, 6)).astype(np.float32)
    big = np.asarray(Image.fromarray((coarse * 200 + 25).astype(np.uint8)).resize((size, size), Image.BICUBIC))
    return np.clip(big + rng.normal(0, 10, big.shape), 0, 255).astype(np.uint8)


def save(path, pixels, fmt="PNG", **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt, **kw)
    return str(path)


def clean_set(root, per_class=6):
    """Kaggle-style tree of distinct images: patients never cross splits."""
    rows = []
    for c, label in enumerate(("NORMAL", "PNEUMONIA")):
        for i in range(per_class):
            split = ("train", "train", "train", "val", "test", "test")[i % 6]
            name = f"IM-{c}{i:03d}-0001.png" if label == "NORMAL" else f"person{c}{i}_virus_{i}.png"
            path = save(root / split / label / name, xray(100 * c + i))
            rows.append((path, label, name.split("_")[0].rsplit("-", 1)[0], split))
    return rows


def manifest(rows):
    return pd.DataFrame(rows, columns=["path", "label", "patient_id", "split"])


def test_clean_data_has_no_findings(tmp_path):
    result = audit_data(manifest(clean_set(tmp_path)), quick=False)
    s = result["summary"]
    assert s["files"] == 12 and s["problem_files"] == 0
    assert s["exact_duplicate_groups"] == 0 and s["near_duplicate_pairs"] == 0
    assert s["patients_in_several_splits"] == 0
    assert result["counts"]["train"] == {"NORMAL": 3, "PNEUMONIA": 3}
    assert result["image_properties"]["modes"] == {"L": 12} and result["image_properties"]["bit_depths"] == {"8": 12}


def test_planted_problems_are_all_found(tmp_path):
    rows = clean_set(tmp_path)
    base = xray(7)
    exact = save(tmp_path / "test" / "NORMAL" / "IM-0900-0001.png", np.asarray(Image.open(rows[0][0])))
    buffer = io.BytesIO()  # near duplicate of rows[1]: half size, JPEG quality 70, brighter
    Image.fromarray(np.clip(np.asarray(Image.open(rows[1][0])) * 0.9 + 20, 0, 255).astype(np.uint8)).resize(
        (48, 48)).save(buffer, "JPEG", quality=70)
    near = tmp_path / "val" / "NORMAL" / "IM-0901-0001.jpeg"
    near.write_bytes(buffer.getvalue())
    zero = tmp_path / "train" / "PNEUMONIA" / "person90_virus_1.png"
    zero.write_bytes(b"")
    text = tmp_path / "train" / "PNEUMONIA" / "person91_virus_2.png"
    text.write_text("<html>not an image</html>")
    truncated = tmp_path / "train" / "NORMAL" / "IM-0902-0001.jpeg"
    full = io.BytesIO()
    Image.fromarray(base).save(full, "JPEG")
    truncated.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    leaked = save(tmp_path / "test" / "PNEUMONIA" / "person00_virus_9.png", xray(999))  # patient of rows[6]
    extra = [(exact, "NORMAL", "IM-0900", "test"), (str(near), "NORMAL", "IM-0901", "val"),
             (str(zero), "PNEUMONIA", "person90", "train"), (str(text), "PNEUMONIA", "person91", "train"),
             (str(truncated), "NORMAL", "IM-0902", "train"), (leaked, "PNEUMONIA", rows[6][2], "test")]
    (tmp_path / "train" / "NORMAL" / "notes.txt").write_text("x")
    result = audit_data(manifest(rows + extra), quick=False)

    problems = {p["path"]: p["problem"] for p in result["problems"]}
    assert problems == {str(zero): "zero-byte file", str(text): "not an image", str(truncated): "truncated"}
    [group] = result["exact_duplicates"]
    assert {f["path"] for f in group["files"]} == {rows[0][0], exact} and group["cross_split"]
    [pair] = result["near_duplicates"]
    assert {f["path"] for f in pair["files"]} == {rows[1][0], str(near)} and pair["cross_split"]
    assert pair["distance"] <= 8 and pair["similarity"] >= 0.85
    [patient] = result["patients_in_several_splits"]
    assert patient["patient_id"] == rows[6][2] and set(patient["images_per_split"]) == {"train", "test"}
    assert result["files_not_taken"]["count"] == 1

    quick = audit_data(manifest(rows + extra), quick=True)
    assert {p["path"] for p in quick["problems"]} == set(problems)  # no decoding needed
    assert quick["summary"]["near_duplicate_pairs"] is None


def _pneumonia_datamodule(root, tmp_path, *overrides):
    cfg = compose_config(["data=pneumonia", f"data.root={root}", "data.split.mode=given",
                          "data.cache.enabled=false", *overrides], tmp_path / "run")
    module = hydra.utils.instantiate(cfg.data, augment=None, _convert_="all")
    module.setup("fit")
    return module


def test_training_checks_stop_on_leakage_and_unreadable_files_unless_allowed(tmp_path):
    rows = clean_set(tmp_path / "data")
    copy = tmp_path / "data" / "test" / "NORMAL" / "IM-0800-0001.png"
    copy.write_bytes(Path(rows[0][0]).read_bytes())  # the same bytes in train and test
    # by default the copy in test/ joins its original in train/ (a tie goes to train)
    module = _pneumonia_datamodule(tmp_path / "data", tmp_path)
    splits = dict(zip(module.manifest["path"], module.manifest["split"]))
    assert splits[rows[0][0]] == splits[str(copy)] == "train"
    assert module.grouping_facts()["moved_from_given_split"] == [str(copy)]
    assert "allowed_leakage" not in check_before_training(module)
    ungrouped = ("data.split.group_duplicates=false",)
    module = _pneumonia_datamodule(tmp_path / "data", tmp_path, *ungrouped)
    with pytest.raises(DataError, match=r"^Cross-split leakage: 2 identical or near-identical files "
                       r"\(1 group\(s\) of copies\) .*data.split.group_duplicates=true.*"
                       r"data.checks.allow_leakage=true"):
        check_before_training(module)
    module = _pneumonia_datamodule(tmp_path / "data", tmp_path, *ungrouped,
                                   "data.checks.allow_leakage=true")
    facts = check_before_training(module)
    assert len(facts["allowed_leakage"]["identical_files_across_splits"]) == 1
    assert facts["patient_leakage_possible"] is False and facts["patients_in_several_splits"] == 0

    (tmp_path / "data" / "val" / "PNEUMONIA" / "person77_virus_1.png").write_bytes(b"")
    module = _pneumonia_datamodule(tmp_path / "data", tmp_path, *ungrouped,
                                   "data.checks.allow_leakage=true")
    with pytest.raises(DataError, match=r"^Cannot read image .*person77_virus_1.png \(zero-byte file\)"):
        check_before_training(module)
    module = _pneumonia_datamodule(tmp_path / "data", tmp_path, *ungrouped,
                                   "data.checks.allow_leakage=true", "data.checks.skip_unreadable=true")
    facts = check_before_training(module)
    assert [p["problem"] for p in facts["skipped_unreadable"]] == ["zero-byte file"]
    assert "person77_virus_1.png" not in " ".join(module.manifest["path"])
    assert len(module.datasets["val"]) == 2


def test_image_level_split_trains_and_results_json_says_leakage_was_possible(tmp_path):
    for i in range(12):  # 6 patients per class, 2 images each
        for label, pid in (("NORMAL", f"IM-{i // 2:04d}-000{i % 2 + 1}"), ("PNEUMONIA", f"person{i // 2}_virus_{i}")):
            save(tmp_path / "data" / "train" / label / f"{pid}.png", xray(1000 * (label == "NORMAL") + i, 80))
    (tmp_path / "data" / "train" / "NORMAL" / "IM-0099-0001.png").write_bytes(b"")
    cfg = compose_config(["data=pneumonia", f"data.root={tmp_path / 'data'}", "data.split.mode=ratios",
                          "data.split.ratios={train: 0.5, val: 0.25, test: 0.25}",
                          "data.split.group_by_patient=false", "data.checks.skip_unreadable=true",
                          "data.cache.enabled=false", "data.loader.num_workers=0", "model.pretrained=false",
                          *TINY_TRAINING], tmp_path / "run")
    train(cfg)
    data = json.loads((tmp_path / "run" / "results.json").read_text())["data"]
    assert data["group_by_patient"] is False and data["split_mode"] == "ratios"
    assert data["patient_leakage_possible"] is True and data["patients_in_several_splits"] > 0
    split = pd.read_csv(tmp_path / "run" / "split.csv")  # recount from the file names
    split["pid"] = [re.match(r"IM-\d+|person\d+", Path(p).name).group(0) for p in split["path"]]
    spread = split[split["split"] != "unused"].groupby("pid")["split"].nunique()
    assert data["patients_in_several_splits"] == int((spread > 1).sum())
    assert data["skipped_unreadable"][0]["path"].endswith("IM-0099-0001.png")
    assert data["positive_class"] == "PNEUMONIA"


def test_audit_entry_writes_json_and_markdown(tmp_path, capsys):
    rows = clean_set(tmp_path / "chest_xray")
    (tmp_path / "chest_xray" / "val" / "NORMAL" / "IM-0555-0001.png").write_bytes(Path(rows[0][0]).read_bytes())
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("audit", overrides=["data=pneumonia", f"data.root={tmp_path}", "data.cache.enabled=false"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
    result = audit(cfg)
    assert result["data"]["split_error"] is not None  # the paper's counts need the whole data set
    assert result["counts"] == {"unsplit": {"NORMAL": 7, "PNEUMONIA": 6}}
    assert result["summary"]["exact_duplicate_groups"] == 1
    written = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert written["summary"] == result["summary"]
    markdown = (tmp_path / "out" / "audit.md").read_text()
    assert "## Exact duplicates (same bytes or same decoded pixels)" in markdown
    assert "same bytes: " in markdown and "IM-0555-0001.png" in markdown
    assert "## Near-duplicate candidates rejected" in markdown
    printed = capsys.readouterr().out
    assert "exact duplicate groups (same bytes or pixels): 1" in printed and "audit.md" in printed
    assert "NORMAL: 7, PNEUMONIA: 6" in printed.splitlines()[0]  # class totals first


def test_quick_facts_of_unchanged_files_are_remembered_between_runs(tmp_path):
    from medrepro.datamodules.audit.data_audit import inspect_manifest
    from medrepro.datamodules.audit.file_facts_store import FileFactsStore

    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for i in range(3):
        path = folder / f"{i}.png"
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(path)
        paths.append(str(path))
    manifest = pd.DataFrame({"path": paths, "label": "a", "split": "train"})
    first = inspect_manifest(manifest, quick=True, store_dir=tmp_path / "store")
    assert first["format"].tolist() == ["PNG"] * 3 and first["problem"].isna().all()

    store = FileFactsStore(tmp_path / "store")
    assert len(store.facts) == 3
    for facts in store.facts.values():  # plant a marker: only a store lookup can return it
        facts["format"] = "FROM-STORE"
    store.save()
    (folder / "2.png").write_bytes((folder / "2.png").read_bytes()[:20])  # changed: truncated
    second = inspect_manifest(manifest, quick=True, store_dir=tmp_path / "store")
    assert second["format"].tolist()[:2] == ["FROM-STORE", "FROM-STORE"]
    assert second["problem"].iloc[2] is not None and second["format"].iloc[2] != "FROM-STORE"
    uncached = inspect_manifest(manifest, quick=True)
    assert uncached["format"].tolist()[:2] == ["PNG", "PNG"]
