"""Run every benchmark task in its own process and collect the results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.harness.cache_build import (
    SIDE,
    SIZE,
    auto_workers,
    make_xray_like_pngs,
    summarise,
    write_class_folders,
)
from benchmarks.harness.data_path import PIPELINES
from benchmarks.harness.flops import gpu_peak_flops
from benchmarks.harness.paths import REPOSITORY_ROOT
from benchmarks.harness.task import RESULT_PREFIX

REAL_XRAYS = REPOSITORY_ROOT.parent / "shared" / "data" / "pneumonia_sample"


@dataclass
class Settings:
    """What one benchmark run measures, and how long."""

    data_sizes: tuple[int, ...] = (224, 299)
    data_seconds: float = 6.0
    model: str = "inception_v3"
    image_size: int | None = None  # None: 96 px on a CPU, 224 px on a GPU
    batch_size: int | None = None  # None: 8 on a CPU, 64 on a GPU
    warmup: int = 3
    steps: int = 12
    rounds: int = 3
    paired_rounds: int = 6  # both loops in one process, alternating (the loops' comparison)
    memory_images: int = 5000
    memory_image_size: int = 224
    cache_images_per_core: int = 200  # the cache build's images: this many per core

    @classmethod
    def quick(cls, **changes) -> Settings:
        return cls(**{"data_seconds": 1.0, "warmup": 2, "steps": 4, "rounds": 1,
                      "paired_rounds": 2, "cache_images_per_core": 60, **changes})

    def resolved(self, device: str) -> Settings:
        gpu = device == "cuda"
        return Settings(**{**asdict(self),
                           "image_size": self.image_size or (224 if gpu else 96),
                           "batch_size": self.batch_size or (64 if gpu else 8)})


def run_task(name: str, arguments: dict, one_core: bool = False,
             env: dict[str, str] | None = None) -> dict:
    """Run :mod:`benchmarks.harness.task` ``name`` in a fresh Python process (with the
    environment variables ``env`` added)."""
    env = {**os.environ, **(env or {})}
    if one_core:
        env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness.task", name, json.dumps(arguments)],
        capture_output=True, text=True, cwd=REPOSITORY_ROOT, env=env, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(f"benchmark task {name} failed:\n{done.stderr[-3000:]}")


def chest_xray_folder(scratch: Path) -> tuple[Path, str]:
    """Real chest X-ray JPEGs (class folders) when ../shared/data has them, else the demo
    generator's pneumonia phantoms at 1024 px (JPEG, like the Kaggle files)."""
    if REAL_XRAYS.is_dir():
        return REAL_XRAYS, f"real chest X-ray JPEGs ({REAL_XRAYS})"
    from medrepro.datamodules.demo.phantoms import ensure_demo_dataset

    folder = ensure_demo_dataset("pneumonia", scratch / "demo", image_size=1024,
                                 images_per_class=24, seed=0)
    return folder / "train", "demo generator's pneumonia phantoms, 1024 px JPEG"


def many_small_images(source: Path, folder: Path, count: int, size: int) -> Path:
    """``count`` JPEG files of ``size`` + 32 px in two class folders, made from the images
    in ``source`` (for the memory measurement: decoding them is cheap)."""
    from io import BytesIO

    from PIL import Image

    encoded = []
    for path in sorted(source.rglob("*.jp*g"))[:16]:
        with Image.open(path) as image:
            buffer = BytesIO()
            image.convert("L").resize((size + 32, size + 32)).save(buffer, "JPEG", quality=90)
            encoded.append(buffer.getvalue())
    return write_class_folders(folder, encoded, count, ".jpeg")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                 .splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu, peak = gpu_peak_flops()
    return {"cpu": cpu, "cores": cores, "gpu": None if gpu == "cpu" else gpu,
            "gpu_peak_flops_16bit": peak, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def run_benchmark(settings: Settings, log=print) -> dict:
    """Measure everything; returns the JSON-able results."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = settings.resolved(device)
    started = time.perf_counter()
    results = {"machine": machine(), "device": device, "settings": asdict(settings)}
    with tempfile.TemporaryDirectory(prefix="medrepro-benchmark-") as scratch:
        scratch = Path(scratch)
        images, description = chest_xray_folder(scratch)
        results["data"] = {"description": description, "images": sum(
            1 for p in images.rglob("*") if p.is_file())}
        results["data_path"] = []
        for pipeline in PIPELINES:
            log(f"data path: {pipeline} ...")
            results["data_path"].append(run_task("data_path", {
                "pipeline": pipeline, "root": str(images), "sizes": list(settings.data_sizes),
                "seconds": settings.data_seconds, "cache_dir": str(scratch / f"cache-{pipeline}"),
            }, one_core=True))

        loop_arguments = {
            "root": str(images), "model_name": settings.model, "image_size": settings.image_size,
            "batch_size": settings.batch_size, "steps": settings.steps, "warmup": settings.warmup,
            "rounds": 1, "cache_dir": str(scratch / "cache-training"), "device": device,
        }
        loops = {"hand-written": [], "lightning": []}
        for round_number in range(settings.rounds):  # alternate, so both see the same noise
            for name, task in (("hand-written", "plain_loop"), ("lightning", "lightning_loop")):
                log(f"training and inference: {name} loop, round {round_number + 1} ...")
                loops[name].append(
                    run_task(task, loop_arguments, one_core=device == "cpu"))
        results["training"] = [best_round(rounds) for rounds in loops.values()]
        log(f"training and inference: both loops in one process, {settings.paired_rounds} "
            "alternating rounds ...")
        results["paired"] = run_task("paired_loops", {**loop_arguments,
                                                      "rounds": settings.paired_rounds},
                                     one_core=device == "cpu")

        log(f"memory: a data module with {settings.memory_images} cached images ...")
        folder = many_small_images(images, scratch / "many", settings.memory_images,
                                   settings.memory_image_size)
        memory_arguments = {"root": str(folder), "size": settings.memory_image_size,
                            "cache_dir": str(scratch / "cache-memory"), "batch_size": 32}
        results["memory"] = [run_task("cache_memory", memory_arguments, one_core=True)
                             for _ in ("build", "read")]
        results["cache_build"] = measure_cache_building(settings, scratch, log)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def measure_cache_building(settings: Settings, scratch: Path, log=print) -> dict:
    """Cache-build images per second with 1 worker process and with one per core, in
    alternating rounds (both see the same noise), each build in a fresh process."""
    cores = max(1, auto_workers())
    count = settings.cache_images_per_core * cores
    log(f"cache build: {count} images, 1 and {cores} worker processes ...")
    folder = make_xray_like_pngs(scratch / "cache-build-images", count)
    rounds = [run_task("cache_build", {"root": str(folder), "workers": workers,
                                       "cache_dir": str(scratch / "cache-build")})
              for _ in range(settings.rounds) for workers in dict.fromkeys((1, cores))]
    return summarise(rounds, cores, f"{count} generated X-ray-like {SIDE} px PNGs, "
                                    f"resized to {SIZE} px")


def best_round(rounds: list[dict]) -> dict:
    """One loop's results over its rounds (processes): the best throughput of each kind, by
    the wall clock and by CPU time, the largest memory, and every round's figures."""
    best = dict(rounds[0])
    for kind in ("train", "inference"):
        for clock in ("", "cpu_"):
            if f"{kind}_images_per_{clock}s" in best:
                best[f"{kind}_images_per_{clock}s"] = max(r[f"{kind}_images_per_{clock}s"]
                                                          for r in rounds)
                best[f"{kind}_{clock}rounds"] = [x for r in rounds
                                                 for x in r[f"{kind}_{clock}rounds"]]
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    return best
