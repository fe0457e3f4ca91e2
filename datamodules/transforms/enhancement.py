"""``data.preprocess.enhance=enh``: local-phase enhancement (ENH) as a deterministic
pre-processing step.

Wraps :func:`medrepro.datamodules.transforms.local_phase.enhance_local_phase` as an
albumentations transform, so it runs after ``data.preprocess.steps`` (the resize) and is
cached with the rest of pre-processing: a grayscale ``[H, W, 1]`` image in [0, 1] becomes the
three-channel ``[H, W, 3]`` ENH image (LwPA, LPE, ELEA), each channel in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, fields

import albumentations as A
import numpy as np
import torch

from medrepro.datamodules.transforms.local_phase import EnhParams, enhance_local_phase

ENHANCEMENTS = ("none", "enh")


class LocalPhaseEnhancement(A.ImageOnlyTransform):
    """Grayscale image -> ENH image of Qi et al. 2021 (see :mod:`medrepro.datamodules.transforms.local_phase`).

    The filter wavelengths are in pixels of the image it receives: placed after the
    resize, they are in pixels of the model's input.
    """

    def __init__(
        self,
        nscale: int = EnhParams.nscale,
        min_wavelength: float = EnhParams.min_wavelength,
        mult: float = EnhParams.mult,
        sigma_onf: float = EnhParams.sigma_onf,
        rho: float = EnhParams.rho,
        delta: float = EnhParams.delta,
        eps: float = EnhParams.eps,
    ) -> None:
        super().__init__(p=1.0)
        self.enh_params = EnhParams(nscale, min_wavelength, mult, sigma_onf, rho, delta, eps)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        gray = img[:, :, 0] if img.ndim == 3 else img
        if img.ndim == 3 and img.shape[2] != 1:
            raise ValueError("local-phase enhancement takes grayscale images (data.channels=1).")
        with torch.no_grad():
            enhanced = enhance_local_phase(torch.from_numpy(np.ascontiguousarray(gray, np.float32)),
                                           self.enh_params)
        return enhanced.permute(1, 2, 0).contiguous().numpy()

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(EnhParams))

    def get_transform_init_args(self) -> dict:
        return asdict(self.enh_params)
