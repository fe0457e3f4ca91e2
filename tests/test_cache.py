"""The decoded-image cache: built once, reused, invalidated, atomic; and the lean training
step (channels_last, trainer keys not for Lightning). About 30 s on a 2-core CPU."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import albumentations as A
import hydra
import numpy as np
import pytest
import tifffile
import torch
from conftest import REPO, TINY_TRAINING, compose_config, write_gray

from medrepro.core.errors import ConfigError, DataError
from medrepro.datamodules import image_dataset
from medrepro.datamodules.cache.image_cache import ImageCache, quantise
from medrepro.datamodules.data_settings import CacheSettings
from medrepro.datamodules.image_dataset import preprocess_image
from medrepro.datamodules.transforms.image_reader import read_image
from medrepro.jobs.training import build_model, build_trainer

QUANTUM = 1 / 510 + 1e-6  # largest error of rounding to 1/255 steps


@pytest.fixture
def count_reads(monkeypatch):
    """Count the image files read through the data path."""
    reads = []

    def counting_read_image(path, channels=1, max_pixels=None):
        reads.append(str(path))
        return read_image(path, channels, max_pixels)

    monkeypatch.setattr(image_dataset, "read_image", counting_read_image)
    return reads


def datamodule(tmp_path, root, *overrides, augment=None):
    cfg = compose_config(
        ["data=folder", f"data.root={root}", "data.image_size=16", "data.loader.num_workers=0",
         "data.cache.workers=0",  # built in this process, where count_reads sees the reads
         f"data.cache.dir={tmp_path / 'cache'}", *overrides], tmp_path / "run")
    module = hydra.utils.instantiate(cfg.data, augment=augment, _convert_="all")
    module.prepare_data()
    module.setup("fit")
    return module


def cache_files(tmp_path, pattern="*.npy"):
    return sorted((tmp_path / "cache").glob(pattern))


def test_cache_is_built_once_then_later_runs_read_no_image_file(tmp_path, class_folders, count_reads):
    first = datamodule(tmp_path, class_folders)
    first.train_dataloader()
    assert sorted(count_reads) == sorted(first.manifest["path"])  # every image read once
    [array_file] = cache_files(tmp_path)
    built = array_file.stat().st_mtime_ns

    count_reads.clear()
    second = datamodule(tmp_path, class_folders, "seed=3")  # another split, same images
    for loader in (second.train_dataloader(), second.val_dataloader(), second.test_dataloader()):
        for _ in range(2):  # two epochs
            for batch in loader:
                assert batch["image"].shape[1:] == (1, 16, 16)
    assert count_reads == []
    assert cache_files(tmp_path) == [array_file] and array_file.stat().st_mtime_ns == built
    index = json.loads(array_file.with_suffix(".json").read_text())
    assert sorted(index["paths"]) == sorted(second.manifest["path"])


def test_cached_items_equal_uncached_items_up_to_8_bit_quantisation(tmp_path, class_folders):
    cached = datamodule(tmp_path, class_folders)
    cached.build_cache()
    plain = datamodule(tmp_path, class_folders, "data.cache.enabled=false")
    plain.train_dataloader()
    assert plain.image_cache is None and plain.datasets["train"].cache is None
    for split in ("train", "test"):
        for index in range(len(plain.datasets[split])):
            a, b = cached.datasets[split][index], plain.datasets[split][index]
            assert a["path"] == b["path"] and a["label"] == b["label"]
            difference = (a["image"] - b["image"]).abs().max().item()
            assert difference <= QUANTUM
            assert torch.equal(a["image"], torch.from_numpy(
                quantise(b["image"].numpy()).astype(np.float32) / 255))


def test_16_bit_tiff_reaches_the_model_with_256_levels(tmp_path):
    path = tmp_path / "ramp.tif"
    tifffile.imwrite(path, np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64))
    cache = ImageCache.open_or_build([str(path)], 1, None, tmp_path / "cache", progress=False)
    exact = read_image(path)
    cached = cache.image(str(path))
    assert cached.dtype == np.float32 and cached.shape == exact.shape == (64, 64, 1)
    assert np.abs(cached - exact).max() <= QUANTUM
    assert len(np.unique(exact)) == 4096 and len(np.unique(cached)) == 256


def test_a_changed_file_or_preprocessing_config_builds_a_new_cache(tmp_path, class_folders):
    first = datamodule(tmp_path, class_folders)
    first.build_cache()
    changed = min((class_folders / "cat").iterdir())
    write_gray(changed, 250)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    second = datamodule(tmp_path, class_folders)
    second.build_cache()
    assert len(cache_files(tmp_path)) == 2
    assert second.image_cache.image(str(changed)).mean() > 0.9  # the new pixels
    assert first.image_cache.image(str(changed)).mean() < 0.4  # the old cache is untouched
    resized = datamodule(tmp_path, class_folders, "data.image_size=20")
    assert resized.build_cache().image(str(changed)).shape == (20, 20, 1)
    datamodule(tmp_path, class_folders, "data.channels=3").build_cache()
    assert len(cache_files(tmp_path)) == 4


def _build_in_process(arguments):
    paths, cache_dir = arguments
    cache = ImageCache.open_or_build(paths, 1, A.Compose([A.Resize(40, 40)]), cache_dir,
                                     progress=False)
    return np.asarray(cache.array).copy()


def test_concurrent_builders_leave_one_complete_cache(tmp_path):
    paths = [str(write_gray(tmp_path / "images" / f"{i}.png", 10 * i, size=300)) for i in range(24)]
    cache_dir = tmp_path / "cache"
    with multiprocessing.get_context("fork").Pool(3) as pool:
        arrays = pool.map(_build_in_process, [(paths, cache_dir)] * 3)
    oracle = np.stack([quantise(preprocess_image(p, 1, A.Compose([A.Resize(40, 40)])))
                       for p in sorted(paths)])  # rows in path order
    for array in arrays:
        np.testing.assert_array_equal(array, oracle)
    assert [p.suffix for p in sorted(cache_dir.iterdir())] == [".json", ".lock", ".npy"]


def test_a_failed_build_leaves_no_cache_behind(tmp_path):
    """A build that fails half-way (the second image has another size, which one array
    cannot hold) leaves neither the array nor its index, only the lock file."""
    write_gray(tmp_path / "a" / "1.png", 10, size=24)
    write_gray(tmp_path / "a" / "2.png", 10, size=30)
    paths = sorted(str(p) for p in (tmp_path / "a").iterdir())
    with pytest.raises(ConfigError):
        ImageCache.open_or_build(paths, 1, None, tmp_path / "cache", progress=False)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".lock"]


def test_a_file_that_cannot_be_decoded_is_listed_by_the_cache_not_a_failed_build(
        tmp_path, class_folders):
    """An undecodable file does not fail the build: the cache is complete and lists it with
    the reason, the data loader stops with one sentence naming the file and
    data.checks.skip_unreadable, and with that setting the same cache (not rebuilt) serves
    the 20 good images."""
    broken = class_folders / "dog" / "broken.png"
    broken.write_bytes(b"\x89PNG truncated")
    module = datamodule(tmp_path, class_folders)
    with pytest.raises(DataError) as stop:
        module.train_dataloader()
    sentence = str(stop.value)
    assert sentence.startswith(f"Cannot read image {broken} (")
    assert "set data.checks.skip_unreadable=true" in sentence and "\n" not in sentence
    [array_file] = cache_files(tmp_path)
    index = json.loads(array_file.with_suffix(".json").read_text())
    assert list(index["unreadable"]) == [str(broken)] and len(index["paths"]) == 21
    built = array_file.stat().st_mtime_ns

    skipping = datamodule(tmp_path, class_folders, "data.checks.skip_unreadable=true")
    skipping.train_dataloader()
    assert str(broken) not in set(skipping.manifest["path"]) and len(skipping.manifest) == 20
    assert skipping.data_checks["skipped_unreadable"][0]["path"] == str(broken)
    assert cache_files(tmp_path) == [array_file] and array_file.stat().st_mtime_ns == built
    for path in skipping.manifest["path"]:
        np.testing.assert_array_equal(
            skipping.image_cache.image(path),
            quantise(preprocess_image(path, 1, skipping.pipeline)).astype(np.float32) / 255)


def test_images_of_several_sizes_need_a_resize_to_be_cached(tmp_path):
    write_gray(tmp_path / "a" / "1.png", 10, size=24)
    write_gray(tmp_path / "a" / "2.png", 10, size=30)
    paths = sorted(str(p) for p in (tmp_path / "a").iterdir())
    with pytest.raises(ConfigError, match="end data.preprocess.steps with a Resize"):
        ImageCache.open_or_build(paths, 1, None, tmp_path / "cache", progress=False)


def test_augmentation_still_runs_per_epoch_after_the_cache(tmp_path, class_folders, count_reads):
    cfg = compose_config(["augment=basic"], tmp_path / "run")
    augment = hydra.utils.instantiate(cfg.augment)
    module = datamodule(tmp_path, class_folders, augment=augment)
    module.build_cache()
    count_reads.clear()
    train = module.datasets["train"]
    epochs = [torch.stack([train[i]["image"] for i in range(len(train))]) for _ in range(2)]
    assert count_reads == []
    assert not torch.equal(epochs[0], epochs[1])
    validation = module.datasets["val"]
    assert torch.equal(validation[0]["image"], validation[0]["image"])  # no augmentation


def test_build_ahead_of_time_from_the_command_line(tmp_path, class_folders):
    done = subprocess.run(
        [sys.executable, "-m", "medrepro.cli.cache", "data=folder", f"data.root={class_folders}",
         "data.image_size=16", f"data.cache.dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "20 images cached in" in done.stdout
    assert "caching images" in done.stderr  # the progress bar
    [array_file] = cache_files(tmp_path)
    assert np.load(array_file, mmap_mode="r").shape == (20, 16, 16, 1)
    module = datamodule(tmp_path, class_folders)
    assert module.build_cache().array_path == array_file  # training finds it


def test_model_and_inputs_are_channels_last_and_give_the_same_logits(tmp_path):
    cfg = compose_config(["model.name=resnet18", *TINY_TRAINING], tmp_path / "run")
    model = build_model(cfg, ["a", "b"], 3).eval()
    weight = model.backbone.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    images = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        logits = model(images)
        plain = model.backbone.to(memory_format=torch.contiguous_format)(
            (images - model.mean) / model.std)
    torch.testing.assert_close(logits, plain, rtol=1e-4, atol=1e-4)


def test_trainer_keys_not_for_lightning_and_cudnn_benchmark(tmp_path):
    before = torch.backends.cudnn.benchmark
    try:
        cfg = compose_config(["trainer.compile=true", *TINY_TRAINING], tmp_path / "run")
        build_trainer(cfg, [], False, tmp_path)  # compile is popped, not given to Lightning
        assert torch.backends.cudnn.benchmark is True
        cfg = compose_config(["trainer.deterministic=true", *TINY_TRAINING], tmp_path / "run")
        build_trainer(cfg, [], False, tmp_path)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before


class RecordingResize:
    """A pre-processing step (resize to 20 px) that notes which process ran it and with
    how many OpenCV threads, as an empty file ``<pid>-<threads>`` in ``folder``."""

    def __init__(self, folder):
        self.folder = folder

    def __call__(self, image):
        import cv2

        (self.folder / f"{os.getpid()}-{cv2.getNumThreads()}").touch()
        return {"image": cv2.resize(image, (20, 20), interpolation=cv2.INTER_AREA)}

    def __repr__(self) -> str:
        return "RecordingResize(20)"


def test_worker_processes_build_the_cache_after_opencv_used_its_threads_here(tmp_path):
    """A process that has already run OpenCV on several threads (any earlier image work:
    the audit, another cache) forks the build's workers: they must not touch OpenCV's
    thread pool, whose lock the fork copied held (``cv2.setNumThreads`` in a worker hung
    for ever). Run in a process of its own, with a time limit, so a hang fails the test."""
    for i in range(12):
        write_gray(tmp_path / "images" / f"{i:02d}.png", 10 * i, size=40)
    program = (
        "import sys, glob, numpy as np, cv2, albumentations as A\n"
        "from medrepro.datamodules.cache.image_cache import ImageCache\n"
        "cv2.setNumThreads(2)\n"
        "big = np.random.rand(2000, 2000).astype(np.float32)\n"
        "for _ in range(3): cv2.GaussianBlur(big, (31, 31), 5)  # OpenCV's pool, in use\n"
        "paths = sorted(glob.glob(sys.argv[1] + '/*.png'))\n"
        "cache = ImageCache.open_or_build(paths, 1, A.Compose([A.Resize(20, 20)]), sys.argv[2],\n"
        "                                 num_workers=2, progress=False)\n"
        "print(len(cache), cv2.getNumThreads())\n"
    )
    done = subprocess.run([sys.executable, "-c", program, str(tmp_path / "images"),
                           str(tmp_path / "cache")], capture_output=True, text=True,
                          timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["12", "2"]  # every image, and this process's threads restored


def test_worker_processes_build_the_same_cache_as_one_process(tmp_path):
    """Two worker processes, one OpenCV thread each, pre-process the images in chunks and
    the building process writes them in row order: the array and the index (an undecodable
    file in the middle included) equal the images pre-processed one by one here."""
    paths = [str(write_gray(tmp_path / "images" / f"{i:02d}.png", 6 * i, size=30 + i))
             for i in range(37)]
    broken = tmp_path / "images" / "17b.png"
    broken.write_bytes(b"\x89PNG truncated")
    paths = sorted([*paths, str(broken)])
    builds = {}
    for workers in (0, 2):
        notes = tmp_path / f"notes{workers}"
        notes.mkdir()
        builds[workers] = ImageCache.open_or_build(paths, 1, RecordingResize(notes),
                                                   tmp_path / f"cache{workers}",
                                                   num_workers=workers, progress=False)
        processes = {name.split("-")[0] for name in os.listdir(notes)}
        threads = {name.split("-")[1] for name in os.listdir(notes)}
        if workers:
            assert len(processes) == 2 and str(os.getpid()) not in processes and threads == {"1"}
        else:
            assert processes == {str(os.getpid())}
    resize = A.Compose([A.Resize(20, 20, interpolation=3)])
    oracle = np.stack([np.zeros((20, 20, 1), np.uint8) if p == str(broken) else
                       quantise(preprocess_image(p, 1, resize)) for p in paths])
    for cache in builds.values():
        np.testing.assert_array_equal(np.asarray(cache.array), oracle)
        assert list(cache.unreadable) == [str(broken)] and list(cache.rows) == paths
    assert builds[0].unreadable == builds[2].unreadable


def test_auto_builds_with_one_worker_per_core_and_none_on_one_core():
    from medrepro.datamodules.cache.image_cache import build_workers

    cores = os.sched_getaffinity(0)
    assert build_workers("auto") == (len(cores) if len(cores) > 1 else 0)
    assert build_workers(3) == 3 and build_workers(0) == 0
    try:
        os.sched_setaffinity(0, {min(cores)})
        assert build_workers("auto") == 0
    finally:
        os.sched_setaffinity(0, cores)


def test_the_benchmark_reports_the_cache_build_with_1_and_n_workers(tmp_path):
    """benchmark.py's cache-build task on a few generated PNGs: every image is cached, and
    the report's speed-up is the ratio of the two measured rates."""
    from benchmarks.harness.cache_build import make_xray_like_pngs, measure_cache_build, summarise
    from benchmarks.harness.report import format_cache_build

    folder = make_xray_like_pngs(tmp_path / "pngs", 12, side=64)
    assert len(list(folder.rglob("*.png"))) == 12
    rounds = [measure_cache_build(str(folder), workers, str(tmp_path / "cache"), size=32)
              for workers in (1, 2, 1)]
    assert [r["images"] for r in rounds] == [12, 12, 12] and not (tmp_path / "cache").exists()
    build = summarise(rounds, 2, "12 test PNGs")
    fastest_one = max(rounds[0]["images_per_s"], rounds[2]["images_per_s"])
    assert build["one_worker"]["images_per_s"] == fastest_one
    assert build["speedup"] == pytest.approx(rounds[1]["images_per_s"] / fastest_one)
    sentence = format_cache_build(build)
    assert sentence.startswith("Building the cache with worker processes (12 test PNGs): ")
    assert f"{build['speedup']:.2f}x on 2 cores" in sentence


def test_data_cache_workers_sets_the_builders_whatever_the_loader_uses(tmp_path, class_folders,
                                                                      caplog):
    """``data.cache.workers=2`` builds with two worker processes while the data loaders
    use none (``data.loader.num_workers=0``); a value that is not a count is one sentence."""
    module = datamodule(tmp_path, class_folders, "data.cache.workers=2")
    assert module.loader.num_workers == 0
    with caplog.at_level("INFO", logger="medrepro.datamodules.cache.image_cache"):
        module.build_cache()
    assert "(20 images, once, 2 worker processes)" in caplog.text
    with pytest.raises(ConfigError, match="^data.cache.workers must be auto or a number of "
                                          r"worker processes \(0 or more\), not all.$"):
        CacheSettings(enabled=True, dir=str(tmp_path), workers="all")
