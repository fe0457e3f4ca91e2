"""Local-phase enhancement: monogenic signal against phasecongruency.monofilt, ENH channels."""

from pathlib import Path

import numpy as np
import pytest
import torch

from medrepro.datamodules.transforms.local_phase import (
    EnhParams,
    _filter_bank,
    enhance_local_phase,
    monogenic,
)

phasecongruency = pytest.importorskip("phasecongruency")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PNEUMONIA = DATA / "pneumonia_sample"

# (nscale, min_wavelength, mult, sigma_onf)
PARAM_SETS = [
    (4, 3.0, 2.1, 0.55),  # Kovesi's phasecongmono defaults, our ENH default
    (3, 6.0, 2.0, 0.65),
    (5, 2.5, 1.8, 0.75),
    (1, 10.0, 2.0, 0.4),
]
SIZES = [(64, 64), (63, 65), (64, 65), (65, 48)]  # even/even, odd/odd, mixed both ways


def synthetic(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Steps, a bright and a dark line, a disc, a ramp and noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    img = 0.3 + 0.2 * (x > cols / 3) + 0.1 * (y > rows / 2)
    img += 0.2 * (np.abs(x - 0.7 * cols) < 1.5) - 0.15 * (np.abs(y - 0.25 * rows) < 1)
    img += 0.1 * ((x - cols / 2) ** 2 + (y - rows / 2) ** 2 < (min(rows, cols) / 5) ** 2)
    img += 0.05 * x / cols + 0.03 * rng.standard_normal((rows, cols))
    return np.clip(img, 0, 1)


def load_xrays(size: tuple[int, int]) -> np.ndarray:
    """One NORMAL and one PNEUMONIA sample, downsampled to ``size`` (rows, cols), in [0, 1]."""
    if not PNEUMONIA.is_dir():
        pytest.skip(f"sample chest X-rays not found at {PNEUMONIA}")
    from PIL import Image

    paths = [min((PNEUMONIA / c).glob("*.jpeg")) for c in ("NORMAL", "PNEUMONIA")]
    rows, cols = size
    images = []
    for path in paths:
        with Image.open(path) as im:
            im = im.convert("L").resize((cols, rows), Image.Resampling.BILINEAR)
            images.append(np.asarray(im, dtype=np.float64) / 255.0)
    return np.stack(images)


def reference_monogenic(img: np.ndarray, params) -> np.ndarray:
    """monofilt's (f, h1f, h2f) as one array [3, nscale, H, W]."""
    f, h1f, h2f = phasecongruency.monofilt(img, *params)[:3]
    return np.stack([np.stack(f), np.stack(h1f), np.stack(h2f)])


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """Worst max-abs error over all [H, W] planes, each relative to that plane's range."""
    ours = ours.reshape(-1, *ref.shape[-2:])
    ref = ref.reshape(-1, *ref.shape[-2:])
    err = np.abs(ours - ref).max(axis=(-2, -1))
    span = ref.max(axis=(-2, -1)) - ref.min(axis=(-2, -1))
    return float((err / span).max())


def monogenic_np(images: torch.Tensor, params) -> np.ndarray:
    """Ours as [B, 3, nscale, H, W] float64 numpy."""
    return torch.stack(monogenic(images, *params), dim=-4).double().numpy()


@pytest.mark.parametrize("params", PARAM_SETS)
@pytest.mark.parametrize("size", SIZES)
def test_monogenic_matches_monofilt_synthetic(params, size):
    img = synthetic(*size)
    ref = reference_monogenic(img, params)
    ours = torch.stack(monogenic(torch.from_numpy(img).float(), *params))
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    assert relative_error(ours.double().numpy(), ref) < 1e-5


@pytest.mark.parametrize("params", PARAM_SETS[:3])
@pytest.mark.parametrize("size", [(96, 80), (81, 67)])
def test_monogenic_matches_monofilt_xrays_batched(params, size):
    images = load_xrays(size)
    ours = monogenic_np(torch.from_numpy(images).float(), params)
    assert ours.shape == (2, 3, params[0], *size)
    for b, img in enumerate(images):
        assert relative_error(ours[b], reference_monogenic(img, params)) < 1e-5


def test_monogenic_float64_is_exact_and_intensity_scale_free():
    img = synthetic(50, 37, seed=1)
    ref = reference_monogenic(img, PARAM_SETS[0])
    ours = torch.stack(monogenic(torch.from_numpy(img), *PARAM_SETS[0]))
    assert ours.dtype == torch.float64
    assert relative_error(ours.numpy(), ref) < 1e-12
    # Any real intensity scale is accepted (the DC is removed, the filters are linear).
    ours_255 = torch.stack(monogenic(torch.from_numpy(img * 255 + 7), *PARAM_SETS[0]))
    assert relative_error(ours_255.numpy() / 255, ref) < 1e-12


def test_monogenic_batched_equals_per_image():
    images = torch.from_numpy(np.stack([synthetic(40, 45, s) for s in range(3)])).float()
    batched = monogenic(images, *PARAM_SETS[1])
    for b in range(3):
        single = monogenic(images[b], *PARAM_SETS[1])
        for part_b, part_s in zip(batched, single):
            assert part_s.shape == (3, 40, 45)
            torch.testing.assert_close(part_b[b], part_s, rtol=0, atol=1e-6)


def test_riesz_signs():
    """Documented signs: bright line -> even > 0; step rising to +x -> odd1 > 0, +y -> odd2 > 0."""
    n = 64
    line = torch.zeros(n, n)
    line[:, 31:33] = 1
    step_x = torch.zeros(n, n)
    step_x[:, n // 2 :] = 1
    even, _, _ = monogenic(line, 1, 8.0, 2.0, 0.55)
    assert even[0, 10, 31] > 0
    _, odd1, odd2 = monogenic(step_x, 1, 8.0, 2.0, 0.55)
    assert odd1[0, 10, n // 2 - 1] > 0 and odd2.abs().max() < 1e-6
    _, odd1, odd2 = monogenic(step_x.T.contiguous(), 1, 8.0, 2.0, 0.55)
    assert odd2[0, n // 2 - 1, 10] > 0 and odd1.abs().max() < 1e-6


def test_filter_bank_is_cached():
    _filter_bank.cache_clear()
    img = torch.rand(33, 34)
    monogenic(img, *PARAM_SETS[0])
    monogenic(img + 1, *PARAM_SETS[0])
    monogenic(img.double(), *PARAM_SETS[0])  # another dtype: another entry
    info = _filter_bank.cache_info()
    assert (info.hits, info.misses) == (1, 2)


def reference_enh(img: np.ndarray, p: EnhParams) -> np.ndarray:
    """Independent numpy ENH from monofilt's outputs: [3, H, W] (LwPA, LPE, ELEA), min-max."""
    f, h1, h2 = reference_monogenic(img, (p.nscale, p.min_wavelength, p.mult, p.sigma_onf))
    lwpa = np.arctan2(f.sum(0), np.sqrt(h1.sum(0) ** 2 + h2.sum(0) ** 2))
    lpe = (np.abs(f) - np.sqrt(h1**2 + h2**2)).sum(0) * lwpa
    elea = (lpe - p.rho) / np.maximum(img, p.eps) ** p.delta + p.rho
    out = np.stack([lwpa, lpe, elea])
    low = out.min(axis=(1, 2), keepdims=True)
    return (out - low) / (out.max(axis=(1, 2), keepdims=True) - low)


ENH_PARAMS = [
    EnhParams(),
    EnhParams(nscale=3, min_wavelength=5.0, mult=2.0, sigma_onf=0.65, rho=0.5, delta=2.0),
    EnhParams(rho=0.0, delta=0.5, eps=0.01),
]


@pytest.mark.parametrize("p", ENH_PARAMS)
def test_enh_matches_numpy_formulas_float64(p):
    img = synthetic(57, 64, seed=2)
    ours = enhance_local_phase(torch.from_numpy(img), p)
    assert ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), reference_enh(img, p), rtol=0, atol=1e-9)


@pytest.mark.parametrize("p", ENH_PARAMS[:2])
def test_enh_matches_numpy_formulas_float32_xrays(p):
    images = load_xrays((96, 81))
    ours = enhance_local_phase(torch.from_numpy(images).float(), p).double().numpy()
    for b, img in enumerate(images):
        err = np.abs(ours[b] - reference_enh(img, p))
        # LPE and ELEA are well conditioned. LwPA = atan2 of two small numbers is not, where
        # the band-pass energy is ~0 (measured: max 6e-5, median 2e-7 at 299 px).
        assert err[1:].max() < 2e-5
        assert err[0].max() < 1e-3 and np.median(err[0]) < 1e-6


def test_enh_shape_range_dtype_and_batching():
    images = torch.from_numpy(np.stack([synthetic(48, 55, s) for s in range(3)])).float()
    out = enhance_local_phase(images)
    assert out.shape == (3, 3, 48, 55) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out.amin(dim=(-2, -1)), torch.zeros(3, 3))
    torch.testing.assert_close(out.amax(dim=(-2, -1)), torch.ones(3, 3))
    for b in range(3):
        single = enhance_local_phase(images[b])
        assert single.shape == (3, 48, 55)
        torch.testing.assert_close(out[b], single, rtol=0, atol=1e-5)


def test_enh_params_object_and_overrides_agree():
    img = torch.from_numpy(synthetic(40, 40)).float()
    a = enhance_local_phase(img, EnhParams(nscale=3, rho=0.4))
    b = enhance_local_phase(img, nscale=3, rho=0.4)
    c = enhance_local_phase(img, EnhParams(nscale=5), nscale=3, rho=0.4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_enh_constant_image_is_zero():
    out = enhance_local_phase(torch.full((2, 20, 21), 0.5))
    assert torch.equal(out, torch.zeros(2, 3, 20, 21))


def test_bad_inputs_say_what_to_do():
    with pytest.raises(TypeError, match="divide 8-bit images by 255"):
        enhance_local_phase(torch.zeros(8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enhance_local_phase(torch.full((8, 8), 2.0))
    with pytest.raises(ValueError, match=r"\[H, W\] or \[B, H, W\]"):
        monogenic(torch.zeros(1, 1, 8, 8), *PARAM_SETS[0])
    with pytest.raises(ValueError, match="sigma_onf"):
        monogenic(torch.zeros(8, 8), 3, 3.0, 2.0, 1.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        enhance_local_phase(torch.zeros(8, 8), n_scales=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    images = torch.from_numpy(load_xrays((128, 101))).float()
    cpu = enhance_local_phase(images)
    gpu = enhance_local_phase(images.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    err = (gpu.cpu() - cpu).abs()
    assert err[:, 1:].max() < 2e-5  # LPE, ELEA; LwPA as in the float32 test above
    assert err[:, 0].max() < 1e-3 and err[:, 0].median() < 1e-6
    mono_cpu = torch.stack(monogenic(images, *PARAM_SETS[0]))
    mono_gpu = torch.stack(monogenic(images.cuda(), *PARAM_SETS[0])).cpu()
    ref = np.stack([reference_monogenic(img, PARAM_SETS[0]) for img in images.double().numpy()])
    assert relative_error(mono_gpu.transpose(0, 1).double().numpy(), ref) < 1e-5
    assert relative_error(mono_cpu.transpose(0, 1).double().numpy(), ref) < 1e-5


def test_module_does_not_depend_on_phasecongruency():
    import medrepro.datamodules.transforms.local_phase as module

    source = Path(module.__file__).read_text()
    assert "import phasecongruency" not in source and "from phasecongruency" not in source
