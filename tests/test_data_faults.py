"""Faults in the data that the checks before training must find, each a row of one table:
files that pass the header check but cannot be decoded (a truncated DICOM, a DICOM without
pixel data, a PNG whose image data is garbage), a decompression bomb, a class folder that
``data.class_names`` does not name, identical files under two labels in one split, leakage
whose example must be two files of two splits, and an unwritable cache folder.

Every row runs the real job entry, :func:`medrepro.jobs.job_runner.run_job`, on a config
composed as ``python train.py`` composes it. A fault must end with exit status 1 and
``Error: <one sentence>`` on stderr (no traceback), results.json ``failed`` with that
sentence, and, where a cheap check finds it, nothing expensive done first: no image cache,
no checkpoint. The rows that must train (``data.checks.skip_unreadable=true``,
``data.checks.allow_leakage=true``, the cache off with an unwritable cache folder) check
what results.json and split.csv say. An 11000 x 11000 image must decode without Pillow's
``DecompressionBombWarning``. About 45 s.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import TINY_TRAINING, compose_config, stop_sentence, write_gray
from PIL import Image
from test_dicom import write_dicom

from medrepro.datamodules.audit.audit_report import summary_lines
from medrepro.datamodules.audit.data_audit import audit_data
from medrepro.datamodules.audit.file_inspection import inspect_file
from medrepro.datamodules.transforms.image_reader import ImageTooLarge, read_image
from medrepro.jobs.job_runner import run_job

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["model.name=test_resnet", "data.loader.num_workers=0", *TINY_TRAINING, "data.image_size=32"]
PILLOWS_DEFAULT_LIMIT = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS as Pillow ships it


# --- files ---------------------------------------------------------------------------------------

def one_colour_png(path: Path, side: int, value: int) -> Path:
    """A ``side`` x ``side`` 8-bit grayscale PNG of one value, written row block by row
    block (never ``side``² bytes in memory): a 20000² image is 1.7 MB on disk."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = (b"\x00" + bytes([value]) * side) * 500  # filter byte 0, then the row
    packer = zlib.compressobj(1)
    data = b"".join(packer.compress(rows) for _ in range(side // 500))
    data += packer.compress((b"\x00" + bytes([value]) * side) * (side % 500)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def large_pngs(tmp_path_factory) -> dict[int, Path]:
    """A 20000 x 20000 and an 11000 x 11000 PNG, made once for the module."""
    folder = tmp_path_factory.mktemp("large")
    return {side: one_colour_png(folder / f"{side}.png", side, 90) for side in (20000, 11000)}


def two_classes(root: Path) -> None:
    """``a/`` and ``b/``, 10 distinct small PNGs each: a folder that trains."""
    for label, value in (("a", 40), ("b", 160)):
        for i in range(10):
            write_gray(root / label / f"{label}{i}.png", value + 3 * i)


def split_folders(root: Path) -> None:
    """``train|val|test/a|b/``: 4, 2 and 2 distinct small PNGs per class (``split.mode=given``)."""
    value = 0
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for label in ("a", "b"):
            for i in range(n):
                value += 7
                write_gray(root / split / label / f"{label}{i}.png", value)


def truncated_dicom(root: Path) -> Path:
    whole = write_dicom(root / "a" / "whole.dcm", np.arange(48 * 48).reshape(48, 48) % 4000)
    data = whole.read_bytes()
    whole.unlink()
    (root / "a" / "truncated.dcm").write_bytes(data[: len(data) - 2000])  # half its pixels
    return root / "a" / "truncated.dcm"


def dicom_without_pixels(root: Path) -> Path:
    path = write_dicom(root / "b" / "no_pixels.dcm", np.zeros((16, 16)))
    ds = pydicom.dcmread(path)
    del ds.PixelData  # header (rows, columns, bits) intact
    ds.save_as(path, enforce_file_format=True)
    return path


def png_with_garbage_data(root: Path) -> Path:
    """A PNG whose IDAT holds garbage with a valid CRC: header and end marker are fine."""
    path = write_gray(root / "a" / "garbage.png", 77)
    data = bytearray(path.read_bytes())
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4: at])[0]
    data[at + 4: at + 4 + length] = bytes((i * 37 + 11) % 256 for i in range(length))
    data[at + 4 + length: at + 8 + length] = struct.pack(">I", zlib.crc32(data[at: at + 4 + length]))
    path.write_bytes(bytes(data))
    return path


def with_undecodable(*plants: Callable[[Path], Path]) -> Callable[[Path], None]:
    def files(root: Path) -> None:
        two_classes(root)
        write_dicom(root / "b" / "good.dcm", np.arange(24 * 24).reshape(24, 24) * 5)
        for plant in plants:
            plant(root)
    return files


def with_large(side: int) -> Callable[[Path, dict], None]:
    def files(root: Path, large: dict) -> None:
        two_classes(root)
        os.link(large[side], root / "b" / f"scan_{side}.png")  # no copy of the big file
    files.needs_large = True
    return files


def three_classes(root: Path) -> None:
    two_classes(root)
    for i in range(10):
        write_gray(root / "c" / f"c{i}.png", 90 + 3 * i)


def same_bytes_under_two_labels(root: Path) -> None:
    split_folders(root)
    (root / "train" / "b" / "relabelled.png").write_bytes((root / "train" / "a" / "a0.png").read_bytes())


def same_bytes_in_two_splits(root: Path) -> None:
    """Three identical files, two in train and one in val: the example must not be the two
    in train (the first two by path)."""
    split_folders(root)
    original = (root / "train" / "a" / "a0.png").read_bytes()
    (root / "train" / "a" / "a0_copy.png").write_bytes(original)
    (root / "val" / "a" / "a9.png").write_bytes(original)


def cache_under_a_file(root: Path) -> None:
    two_classes(root)
    (root.parent / "a_file").write_text("not a folder\n")


def read_only_cache_folder(root: Path) -> None:
    two_classes(root)
    (root.parent / "read_only").mkdir()
    (root.parent / "read_only").chmod(0o555)


# --- the table -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One fault: its files, its overrides (``{root}`` is data.root, ``{tmp}`` the test's
    folder, ``{cache}`` data.cache.dir), the exit status, the words its sentence must hold,
    the step results.json must say it stopped at (``failed_at``: ``data_loading`` is before
    the model is built, ``data_check`` the checks before training), whether it must be found
    before the image cache is built (``before_cache``), and for a run that trains the
    planted files it must have skipped, allowed, left out as copies under two labels
    (``excluded``) or moved to the split of their copies (``moved``), relative to
    data.root."""

    id: str
    files: Callable
    overrides: tuple[str, ...]
    exit_code: int
    sentence: tuple[str, ...] = ()
    stops_at: str = "data_check"
    before_cache: bool = True
    skipped: tuple[str, ...] = ()
    cache_dir: str = "{tmp}/cache"
    allowed: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()
    moved: tuple[str, ...] = ()


UNDECODABLE = with_undecodable(truncated_dicom, dicom_without_pixels, png_with_garbage_data)
SKIP = "set data.checks.skip_unreadable=true to train without"
CASES = [
    # 2: files that pass the header check but cannot be decoded (found by decoding them all)
    Case("truncated DICOM", with_undecodable(truncated_dicom), (), 1,
         (("Cannot read image {root}/a/truncated.dcm (unreadable: The number of bytes of pixel data "
          "is less than expected"), SKIP + " it."), before_cache=False),
    Case("DICOM without pixel data", with_undecodable(dicom_without_pixels), (), 1,
         ("Cannot read image {root}/b/no_pixels.dcm (unreadable: a DICOM file without pixel data)",
          SKIP + " it."), before_cache=False),
    Case("PNG with garbage image data", with_undecodable(png_with_garbage_data), (), 1,
         ("Cannot read image {root}/a/garbage.png (unreadable: broken data stream",
          SKIP + " it."), before_cache=False),
    Case("three undecodable files, cache off", UNDECODABLE, ("data.cache.enabled=false",), 1,
         ("Cannot read 3 images, e.g. {root}/a/garbage.png (unreadable: broken data stream",
          SKIP + " them."), before_cache=False),
    Case("three undecodable files skipped", UNDECODABLE, ("data.checks.skip_unreadable=true",), 0,
         skipped=("a/garbage.png", "a/truncated.dcm", "b/no_pixels.dcm")),
    Case("three undecodable files skipped, cache off", UNDECODABLE,
         ("data.checks.skip_unreadable=true", "data.cache.enabled=false"), 0,
         skipped=("a/garbage.png", "a/truncated.dcm", "b/no_pixels.dcm")),
    # 3: a decompression bomb, named as such with the setting that allows large images
    Case("20000x20000 image", with_large(20000), (), 1,
         ("Image {root}/b/scan_20000.png is refused as a possible decompression bomb: "
          "20000x20000 = 400,000,000 pixels, more than data.checks.max_image_pixels "
          "(200,000,000) allows; if it is a genuine image, set "
          "data.checks.max_image_pixels=400000000 (or more), otherwise delete it or "
          + SKIP + " it.",)),
    Case("20000x20000 image, lower limit set", with_large(20000),
         ("data.checks.max_image_pixels=1000000",), 1,
         # (Pillow refuses to open it at all above twice its own guard: then only the pixel
         # count is known, not the width and height)
         ("{root}/b/scan_20000.png is refused as a possible decompression bomb: ",
          "400,000,000 pixels, more than data.checks.max_image_pixels (1,000,000) allows",
          "set data.checks.max_image_pixels=400000000 (or more)")),
    Case("20000x20000 image skipped", with_large(20000), ("data.checks.skip_unreadable=true",), 0,
         skipped=("b/scan_20000.png",)),
    # 4: a class folder that data.class_names does not name
    Case("three class folders, two named", three_classes, ("data.class_names=[a,b]",), 1,
         (("The folder c (10 images) in {root} is not in data.class_names (a, b); add it to "
          "data.class_names to train on it, or move it out of {root} to leave it out."),),
         stops_at="data_loading"),
    # 5: identical files under two labels: left out by default; kept, they stop the run
    Case("identical files under two labels", same_bytes_under_two_labels,
         ("data.split.mode=given",), 0, excluded=("train/a/a0.png", "train/b/relabelled.png")),
    Case("identical files under two labels kept", same_bytes_under_two_labels,
         ("data.split.mode=given", "data.duplicates.exclude_conflicting_labels=false"), 1,
         (("Conflicting labels: 2 identical or near-identical files (1 group(s) of copies) have "
           "different labels in the same split (e.g. {root}/train/a/a0.png labelled a and "
           "{root}/train/b/relabelled.png labelled b, both in train)"),
          "set data.duplicates.exclude_conflicting_labels=true to leave them out",
          "set data.checks.allow_leakage=true")),
    Case("identical files under two labels allowed", same_bytes_under_two_labels,
         ("data.split.mode=given", "data.duplicates.exclude_conflicting_labels=false",
          "data.checks.allow_leakage=true"), 0,
         allowed=("train/a/a0.png", "train/b/relabelled.png")),
    # 6: copies in two given splits join the split holding most of them; ungrouped, the
    # leakage counts files and groups, and its example is in two splits
    Case("identical files in two splits", same_bytes_in_two_splits, ("data.split.mode=given",), 0,
         moved=("val/a/a9.png",)),
    Case("identical files in two splits ungrouped", same_bytes_in_two_splits,
         ("data.split.mode=given", "data.split.group_duplicates=false"), 1,
         (("Cross-split leakage: 3 identical or near-identical files (1 group(s) of copies) are "
           "in more than one split (e.g. {root}/train/a/a0.png in train and {root}/val/a/a9.png "
           "in val)"),
          "set data.split.group_duplicates=true to keep copies in one split",
          "set data.checks.allow_leakage=true")),
    # 7: an unwritable cache folder
    Case("cache folder below a file", cache_under_a_file, (), 1,
         (("The image cache folder {tmp}/a_file/cache cannot be written (Not a directory); set "
          "data.cache.dir to a writable folder, or data.cache.enabled=false to train without "
          "the cache."),), stops_at="data_loading", cache_dir="{tmp}/a_file/cache"),
    pytest.param(
        Case("read-only cache folder", read_only_cache_folder, (), 1,
             (("The image cache folder {tmp}/read_only/cache cannot be written (Permission "
              "denied); set data.cache.dir to a writable folder"),),
             stops_at="data_loading", cache_dir="{tmp}/read_only/cache"),
        marks=pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere"),
        id="read-only cache folder"),
    Case("cache off, cache folder below a file", cache_under_a_file,
         ("data.cache.enabled=false",), 0, cache_dir="{tmp}/a_file/cache"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) if isinstance(c, Case) else c
                                  for c in CASES])
def test_data_fault(case: Case, tmp_path, capsys, caplog, large_pngs):
    root, run = tmp_path / "images", tmp_path / "run"
    cache = Path(case.cache_dir.format(tmp=tmp_path))
    if getattr(case.files, "needs_large", False):
        case.files(root, large_pngs)
    else:
        case.files(root)
    fill = {"root": root, "tmp": tmp_path, "cache": cache}
    cfg = compose_config(["data=folder", f"data.root={root}", *FAST, "data.cache.enabled=true",
                          f"data.cache.dir={cache}", *[o.format(**fill) for o in case.overrides]],
                         run)
    run.mkdir()  # Hydra makes the run folder before the job starts
    caplog.set_level(logging.WARNING)
    if case.exit_code == 0:
        run_job(cfg)
        assert_trained(case, root, run, caplog.text)
        return
    sentence = stop_sentence(cfg, capsys, case.exit_code)
    for words in case.sentence:
        assert words.format(**fill) in sentence, sentence
    assert sentence.endswith(".") and "Error:" not in sentence
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "failed" and results["error"] == sentence
    assert results["failed_at"] == case.stops_at
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()
    if case.before_cache:  # found by a cheap check: no image was decoded into a cache
        assert not cache.is_dir() or not list(cache.glob("*.npy"))


def assert_trained(case: Case, root: Path, run: Path, log: str) -> None:
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed", results.get("error")
    data = results["data"]
    skipped = sorted(entry["path"] for entry in data.get("skipped_unreadable") or [])
    assert skipped == sorted(str(root / name) for name in case.skipped)
    if case.skipped:
        assert f"Skipped {len(case.skipped)} unreadable file(s)" in log
    split = pd.read_csv(run / "split.csv")
    used = set(split.loc[split["split"].isin(["train", "val", "test"]), "path"])
    every_image = {str(p) for p in root.rglob("*") if p.is_file()}
    excluded = {str(root / name) for name in case.excluded}
    assert used == every_image - set(skipped) - excluded  # every other file, the good DICOM included
    left_out = [sorted(f["path"] for f in group) for group in data["conflicting_labels"]]
    assert left_out == ([sorted(excluded)] if excluded else [])
    assert data["moved_from_given_split"] == [str(root / name) for name in case.moved]
    if case.moved:  # every copy is in the split that held most of them (2 of 3 in train)
        copies = {str(root / p) for p in ("train/a/a0.png", "train/a/a0_copy.png", "val/a/a9.png")}
        assert set(split.loc[split["path"].isin(copies), "split"]) == {"train"}
    if case.allowed:
        [group] = data["allowed_leakage"]["identical_files_with_different_labels"]
        assert sorted(f["path"] for f in group["files"]) == [str(root / p) for p in case.allowed]
        assert {f["label"] for f in group["files"]} == {"a", "b"}


def test_a_refused_bomb_is_reported_once_without_pillows_warning(large_pngs, monkeypatch):
    """The 20000² image (400 million pixels: above the default limit, at twice Pillow's guard
    once raised to it) is refused by the header check and by the reader with our sentence
    alone: Pillow's own DecompressionBombWarning is not printed before it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOWS_DEFAULT_LIMIT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        facts = inspect_file(large_pngs[20000])
        with pytest.raises(ImageTooLarge, match="decompression bomb: 20000x20000 = 400,000,000"):
            read_image(large_pngs[20000])
    assert "decompression bomb" in facts.problem
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


# --- large images that are not bombs -------------------------------------------------------------

def test_an_11000_square_image_decodes_without_pillows_warning(large_pngs, monkeypatch):
    """121 million pixels, within the default limit: the reader decodes it and the check
    before training inspects it with no DecompressionBombWarning, even with Pillow's guard at its shipped
    default (Pillow warns above 89.5 million pixels)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOWS_DEFAULT_LIMIT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(large_pngs[11000])
        facts = inspect_file(large_pngs[11000])  # the header check before training
    assert image.shape == (11000, 11000, 1) and float(image[5000, 7000, 0]) == pytest.approx(90 / 255)
    assert facts.problem is None and (facts.width, facts.height) == (11000, 11000)


def test_a_run_with_an_11000_square_image_trains_on_it(tmp_path, large_pngs, monkeypatch):
    """Among small images, the 11000² scan goes through the checks, the cache and training:
    the run completes with it in its split and no DecompressionBombWarning."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOWS_DEFAULT_LIMIT)
    root = tmp_path / "images"
    with_large(11000)(root, large_pngs)
    cfg = compose_config(["data=folder", f"data.root={root}", *FAST,
                          f"data.cache.dir={tmp_path / 'cache'}"], tmp_path / "run")
    (tmp_path / "run").mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_job(cfg)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed"
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert str(root / "b" / "scan_11000.png") in set(split.loc[split["split"] != "unused", "path"])


def test_the_audit_names_a_decompression_bomb_and_the_setting(tmp_path, large_pngs):
    """``python audit.py`` (its :func:`audit_data` and printed summary) lists the 20000²
    image as a possible decompression bomb with its size, in audit.json and in a summary
    line that names data.checks.max_image_pixels."""
    root = tmp_path / "images"
    two_classes(root)
    os.link(large_pngs[20000], root / "b" / "scan_20000.png")
    paths = sorted(str(p) for p in root.rglob("*.png"))
    manifest = pd.DataFrame({"path": paths, "label": [Path(p).parent.name for p in paths],
                             "patient_id": None, "split": "unsplit"})
    audit = audit_data(manifest, quick=False)
    [problem] = audit["problems"]
    assert problem["path"] == str(root / "b" / "scan_20000.png")
    assert problem["problem"] == "possible decompression bomb" and problem["size"] == [20000, 20000]
    assert audit["summary"]["possible_decompression_bombs"] == 1
    [line] = [line for line in summary_lines(audit) if "decompression" in line]
    assert line.startswith(f"possible decompression bombs: 1, e.g. {root}/b/scan_20000.png "
                           "(possible decompression bomb: 20000x20000 = 400,000,000 pixels, more "
                           "than data.checks.max_image_pixels (200,000,000) allows)")
    assert "set data.checks.max_image_pixels higher" in line
