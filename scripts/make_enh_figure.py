"""Write docs/enh_example.png: one sample chest X-ray beside its three ENH channels.

    python scripts/make_enh_figure.py [--image PATH] [--size 512] [--out docs/enh_example.png]

The channels are exactly what ``enhance_local_phase`` returns (each min-max scaled to
[0, 1] per image), shown in gray with the default ``EnhParams``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medrepro.datamodules.transforms.local_phase import EnhParams, enhance_local_phase

DEFAULT_IMAGE = (
    ROOT.parent / "shared" / "data" / "pneumonia_sample" / "NORMAL" / "IM-0214-0001.jpeg"
)
TITLES = (
    "CXR (input)",
    "LwPA: local weighted mean phase angle",
    "LPE: local phase energy",
    "ELEA: enhanced local energy attenuation",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a grayscale X-ray")
    parser.add_argument("--size", type=int, default=512, help="resize to SIZE x SIZE first")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "enh_example.png")
    args = parser.parse_args()
    if not args.image.is_file():
        sys.exit(f"No image at {args.image}; pass one with --image PATH.")

    with Image.open(args.image) as im:
        gray = im.convert("L").resize((args.size, args.size), Image.Resampling.BILINEAR)
    cxr = torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255.0)
    enh = enhance_local_phase(cxr)

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.9), layout="constrained")
    for ax, plane, title in zip(axes, (cxr, *enh), TITLES):
        ax.imshow(plane.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="lanczos")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    p = EnhParams()
    fig.suptitle(
        f"{args.image.parent.name}/{args.image.name} at {args.size}x{args.size}; "
        f"log-Gabor nscale={p.nscale}, min_wavelength={p.min_wavelength:g}, mult={p.mult:g}, "
        f"sigma_onf={p.sigma_onf:g}; ELEA rho={p.rho:g}, delta={p.delta:g}, eps={p.eps:g}",
        fontsize=8,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    plt.close(fig)
    # Quantise to 64 gray levels: the figure is gray anyway, and the file stays small.
    with Image.open(args.out) as im:
        im.convert("L").quantize(64).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
