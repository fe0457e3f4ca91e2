"""ENH images per second: medrepro's torch implementation beside phasecongruency's numpy.

Both sides compute the same thing on the same images: the monogenic signal (torch:
``medrepro.datamodules.transforms.local_phase.monogenic``; numpy: ``phasecongruency.monofilt``, one image at a
time as it takes) and the three ENH channels with the same formulas and parameters
(``EnhParams()`` defaults). Images are the sample chest X-rays resized to each size, or
random images if the samples are not there.

    python benchmarks/enh_speed.py            # 299x299 and 1024x1024
    python benchmarks/enh_speed.py --quick    # fewer repeats, a few seconds
    python benchmarks/enh_speed.py --device cuda --sizes 299 1024 2048
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medrepro.datamodules.transforms.local_phase import EnhParams, enhance_local_phase

SAMPLES = ROOT.parent / "shared" / "data" / "pneumonia_sample"


def load_images(size: int, count: int) -> tuple[np.ndarray, str]:
    """``count`` images ``[count, size, size]`` float32 in [0, 1], and where they came from."""
    paths = sorted(SAMPLES.glob("*/*.jpeg"))
    if not paths:
        rng = np.random.default_rng(0)
        return rng.random((count, size, size), dtype=np.float32), "random"
    from PIL import Image

    images = []
    for i in range(count):
        with Image.open(paths[i % len(paths)]) as im:
            im = im.convert("L").resize((size, size), Image.Resampling.BILINEAR)
            images.append(np.asarray(im, dtype=np.float32) / 255.0)
    return np.stack(images), f"sample chest X-rays from {SAMPLES}"


def enh_numpy(img: np.ndarray, p: EnhParams) -> np.ndarray:
    """ENH of one image with phasecongruency.monofilt and numpy: [3, H, W] float64."""
    from phasecongruency import monofilt

    f, h1, h2 = (np.stack(a) for a in monofilt(img, p.nscale, p.min_wavelength, p.mult,
                                                   p.sigma_onf)[:3])
    lwpa = np.arctan2(f.sum(0), np.sqrt(h1.sum(0) ** 2 + h2.sum(0) ** 2))
    lpe = (np.abs(f) - np.sqrt(h1**2 + h2**2)).sum(0) * lwpa
    elea = (lpe - p.rho) / np.maximum(img, p.eps) ** p.delta + p.rho
    out = np.stack([lwpa, lpe, elea])
    low = out.min(axis=(1, 2), keepdims=True)
    return (out - low) / (out.max(axis=(1, 2), keepdims=True) - low)


def time_torch(images: np.ndarray, batch: int, repeats: int, device: str) -> tuple[float, float]:
    """Images per second of batched ``enhance_local_phase`` (best of ``repeats`` batches);
    and the largest LPE/ELEA difference to numpy on the first image."""
    x = torch.from_numpy(images[:batch]).to(device)

    def sync():
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    out = enhance_local_phase(x)  # warm-up: filter bank, FFT plans
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = enhance_local_phase(x)
        sync()
        best = min(best, time.perf_counter() - start)
    reference = torch.from_numpy(enh_numpy(images[0].astype(np.float64), EnhParams()))
    diff = float((out[0].double().cpu() - reference).abs()[1:].max())
    return batch / best, diff


def time_numpy(images: np.ndarray, count: int) -> float:
    """Images per second of ``enh_numpy``, one image at a time (best of ``count``)."""
    p = EnhParams()
    enh_numpy(images[0].astype(np.float64), p)  # warm-up
    best = float("inf")
    for i in range(count):
        image = images[i % len(images)].astype(np.float64)
        start = time.perf_counter()
        enh_numpy(image, p)
        best = min(best, time.perf_counter() - start)
    return 1.0 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[299, 1024])
    parser.add_argument("--batch", type=int, default=None,
                        help="torch batch size (default 16 up to 512 px, 4 above: on CPU, "
                             "batches of large images are slower per image, cache-bound)")
    parser.add_argument("--repeats", type=int, default=5, help="timed torch batches")
    parser.add_argument("--numpy-images", type=int, default=8, help="timed numpy images")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads of the second torch column (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="batch 4, 2 repeats, 2 numpy images")
    args = parser.parse_args()
    if args.quick:
        args.batch, args.repeats, args.numpy_images = args.batch or 4, 2, 2
    thread_counts = sorted({1, args.threads})

    print(f"torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}")
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; "
          f"device {args.device}; numpy's FFT is single-threaded")
    print(f"parameters: {EnhParams()}")
    header = f"{'size':>9}  {'batch':>5}  {'numpy img/s':>11}"
    for threads in thread_counts:
        header += f"  {f'torch {threads}-thread img/s':>22}  {'ratio':>6}"
    rows = []
    for size in args.sizes:
        batch = args.batch or (16 if size <= 512 else 4)
        images, source = load_images(size, max(batch, args.numpy_images))
        numpy_rate = time_numpy(images, args.numpy_images)
        row = f"{size:>4}x{size:<4}  {batch:>5}  {numpy_rate:11.2f}"
        for threads in thread_counts:
            torch.set_num_threads(threads)
            torch_rate, diff = time_torch(images, batch, args.repeats, args.device)
            row += f"  {torch_rate:22.2f}  {torch_rate / numpy_rate:5.1f}x"
        rows.append(f"{row}   max |LPE,ELEA diff| {diff:.1e}")
    print(f"images: {source}")
    print(header)
    print("\n".join(rows))
    print(f"(torch: float32 batches, best of {args.repeats} after a warm-up; "
          f"numpy: float64 one image at a time, best of {args.numpy_images}. Best-of timing "
          f"damps other load on the machine; multi-threaded torch still slows down badly when "
          f"another process holds a core.)")


if __name__ == "__main__":
    main()
