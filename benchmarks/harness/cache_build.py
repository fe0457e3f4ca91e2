"""Building the decoded-image cache with worker processes: images per second with one
worker and with one per core (``build_workers("auto")``, what ``data.cache.workers=auto``
gives), on the same generated images in the same benchmark run.

The images are X-ray-like 512 px grayscale PNGs (smooth structure plus pixel noise, so
that they compress, and decode, like real radiographs rather than like flat phantoms),
pre-processed as ``data=folder`` does (read, then ``albumentations.Resize`` to 299 px
with ``INTER_AREA``) into a new cache, timed from the call to the finished cache.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

SIDE = 512  # the generated files
SIZE = 299  # after pre-processing (Inception V3's input)
DISTINCT = 32  # distinct images; the files repeat them (the cache decodes every file)


def make_xray_like_pngs(folder: Path, count: int, side: int = SIDE, seed: int = 0) -> Path:
    """``count`` PNG files in two class folders, repeating ``DISTINCT`` distinct images."""
    import cv2
    import numpy as np

    from benchmarks.harness.grouping import texture

    rng = np.random.default_rng(seed)
    encoded = []
    for _ in range(min(DISTINCT, count)):
        noisy = texture(rng, side).astype(np.float32) + rng.normal(0.0, 4.0, (side, side))
        encoded.append(cv2.imencode(".png", np.clip(noisy, 0, 255).astype(np.uint8))[1].tobytes())
    return write_class_folders(folder, encoded, count, ".png")


def write_class_folders(folder: Path, encoded: list[bytes], count: int, suffix: str) -> Path:
    """``count`` files in the class folders ``a/`` and ``b/`` of ``folder``, alternating,
    repeating the ``encoded`` images in turn."""
    for index in range(count):
        target = folder / ("a", "b")[index % 2] / f"{index:05d}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encoded[index % len(encoded)])
    return folder


def auto_workers() -> int:
    from medrepro.datamodules.cache.image_cache import build_workers

    return build_workers("auto")


def measure_cache_build(root: str, workers: int, cache_dir: str, size: int = SIZE) -> dict:
    """Build a new cache of every PNG under ``root`` with ``workers`` worker processes."""
    import albumentations as A
    import cv2

    from medrepro.datamodules.cache.image_cache import ImageCache

    paths = sorted(str(p) for p in Path(root).rglob("*.png"))
    preprocess = A.Compose([A.Resize(size, size, interpolation=cv2.INTER_AREA)])
    shutil.rmtree(cache_dir, ignore_errors=True)
    cpu, start = cpu_seconds(), time.perf_counter()
    cache = ImageCache.open_or_build(paths, 1, preprocess, cache_dir, num_workers=workers,
                                     progress=False)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    assert len(cache) == len(paths) and cache.array.shape[1:] == (size, size, 1)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {"workers": workers, "images": len(paths), "seconds": round(seconds, 3),
            "images_per_s": len(paths) / seconds, "cpu_ms_per_image": 1000 * cpu / len(paths)}


def cpu_seconds() -> float:
    """CPU time of this process and of its ended children (the build's worker processes,
    joined when the build ends): what the build costs whatever else runs on the machine."""
    import resource

    return sum(usage.ru_utime + usage.ru_stime for usage in
               (resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN)))


def summarise(rounds: list[dict], cores: int, description: str) -> dict:
    """The best round of each worker count, and the speed-up of N workers over one."""
    best = {}
    for entry in rounds:
        if entry["workers"] not in best or entry["images_per_s"] > best[entry["workers"]]["images_per_s"]:
            best[entry["workers"]] = entry
    one, many = best[1], best[max(best)]
    return {"description": description, "cores": cores, "images": one["images"],
            "one_worker": one, "n_workers": many,
            "speedup": many["images_per_s"] / one["images_per_s"], "rounds": rounds}
