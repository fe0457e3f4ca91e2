"""Deterministic synthetic demo data: medically motivated phantoms in the real data sets' layouts.

The default ``python train.py`` must run without any download, so it trains on phantoms
written to disk exactly as the real data sets are laid out; the same sources, readers and
pre-processing then run on them as on the real files.  Each phantom carries a large,
coarse-scale class signal that survives resizing to about 96 px, wrapped in realistic
nuisance variation (patient size, position, rotation, exposure, noise, blur):

``cardiomegaly``
    Frontal chest radiographs, ``normal/`` and ``cardiomegaly/``, 16-bit TIFF
    ``CXR_00001.tif`` (12-bit values scaled by 16; numbers unique across classes, one image
    per patient, numbers do not reveal the class).  Cardiothoracic ratio (maximal
    horizontal heart width / maximal inner thoracic width; clinical threshold 0.5):
    normal in [0.36, 0.46], cardiomegaly in [0.54, 0.66].
``pneumonia``
    Kaggle chest-xray layout ``train|val|test/NORMAL|PNEUMONIA/``, 8-bit JPEG.  NORMAL:
    ``IM-NNNN-000K.jpeg`` or ``NORMAL2-IM-NNNN-000K.jpeg`` (patient ``[NORMAL2-]IM-NNNN``,
    some patients with two images); PNEUMONIA: ``personN_bacteria_K.jpeg`` or
    ``personN_virus_K.jpeg`` (patient ``personN``, 1 to 3 images, ``K`` running over the
    class).  Patients, not images, are split about 70/10/20 per class (every split gets a
    patient from 3 patients per class on).  Hearts are normal-sized.  PNEUMONIA lungs
    hold blurred consolidations over 15-40 % of each affected lung field (bacterial: one
    lung, dense and lobar; viral: both lungs, fainter and patchier); NORMAL lungs are clear.
``covid3``
    Three-class chest radiographs for study 5, one folder per class: ``normal/``,
    ``pneumonia/`` and ``COVID-19/``, 8-bit PNG ``CXR_00001.png`` (numbers unique across
    classes, shuffled, one image per patient).  Hearts are normal-sized.  ``pneumonia``
    lungs hold the bacterial or viral consolidations of the ``pneumonia`` data set;
    ``COVID-19`` lungs hold fainter, blurred ground-glass opacities in both lungs,
    peripheral and in the lower zones (the typical COVID-19 pattern), over 15-40 % of each
    lung field.
``brain_mri``
    navoneel Kaggle brain tumour layout ``yes/`` and ``no/`` with its untidy names
    (``Y12.jpg``, ``Y7.JPG``, ``no 5.jpg``, ``No12.jpg``, ``7 no.jpeg``), mostly mode L and
    some RGB JPEGs, sizes within about +-30 % of ``image_size`` and non-square, a head on a
    black background with a black border of varying width.  ``yes`` heads hold a tumour of
    mean radius 8-20 % of the head radius (lobulated outline): a bright enhancing mass, in
    half the cases with a dark necrotic core, inside a darker edema halo.  The tumour is the
    only small-scale class signal of the three; a small CNN still finds it at 96 px.

Every data set root also holds ``ground_truth.csv`` (relative path, class folder and the
phantom's key parameter: ``ctr``; ``split``, ``patient_id`` and ``opacified_lung_fraction``
of the whole lung area; ``tumour_radius``) and, written last, ``.complete`` (JSON of the
parameters and :data:`GENERATOR_VERSION`).  The same parameters give byte-identical files:
every random draw comes from a numpy Generator seeded by (seed, data set, stream, index).
``images_per_class`` is exact for every data set (the last pneumonia patient of a class
gets fewer images if needed).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image

DEMO_DATASETS = ("cardiomegaly", "pneumonia", "brain_mri", "covid3")
COVID3_CLASSES = ("normal", "pneumonia", "COVID-19")
GENERATOR_VERSION = "demo-phantoms-1"
COMPLETE_MARKER = ".complete"
GROUND_TRUTH_FILE = "ground_truth.csv"

NORMAL_CTR_RANGE = (0.36, 0.46)
CARDIOMEGALY_CTR_RANGE = (0.54, 0.66)
CONSOLIDATED_LUNG_FIELD_RANGE = (0.15, 0.40)
TUMOUR_RADIUS_RANGE = (0.08, 0.20)  # fraction of the head radius
PNEUMONIA_SPLIT_SHARES = {"train": 0.7, "val": 0.1, "test": 0.2}


def ensure_demo_dataset(
    name: str,
    root: str | Path,
    *,
    image_size: int = 256,
    images_per_class: int = 150,
    seed: int = 0,
) -> Path:
    """Return the folder of demo data set ``name`` under ``root``, generating it if needed.

    The folder ``root / f"{name}_{image_size}px_{images_per_class}_seed{seed}"`` is reused
    when its ``.complete`` marker matches these parameters and :data:`GENERATOR_VERSION`.
    Otherwise it is generated in a temporary sibling folder that is renamed into place at
    once, so concurrent callers never see a half-written data set; a caller that loses the
    race discards its copy and uses the winner's (identical) one.
    """
    if name not in _DATASET_WRITERS:
        raise ValueError(
            f"Unknown demo data set {name!r}; choose one of {', '.join(DEMO_DATASETS)}."
        )
    if image_size < 32 or images_per_class < 1 or seed < 0:
        raise ValueError(
            "Demo data needs image_size >= 32, images_per_class >= 1 and seed >= 0; "
            f"got {image_size}, {images_per_class}, {seed}."
        )
    root = Path(root)
    target = root / f"{name}_{image_size}px_{images_per_class}_seed{seed}"
    marker = {
        "name": name,
        "image_size": image_size,
        "images_per_class": images_per_class,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
    }
    if _is_complete(target, marker):
        return target
    root.mkdir(parents=True, exist_ok=True)
    _discard_stale_folder(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
    try:
        rows = _DATASET_WRITERS[name](staging, image_size, images_per_class, seed)
        _write_ground_truth(staging / GROUND_TRUTH_FILE, rows)
        (staging / COMPLETE_MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n")
        os.rename(staging, target)
    except OSError:
        if not _is_complete(target, marker):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # no-op after a successful rename
    return target


# --------------------------------------------------------------------------- folder handling


def _is_complete(folder: Path, marker: dict) -> bool:
    try:
        return json.loads((folder / COMPLETE_MARKER).read_text()) == marker
    except (OSError, ValueError):
        return False


def _discard_stale_folder(target: Path) -> None:
    """Move an incomplete or outdated data set aside (atomically) and delete it."""
    if not target.exists():
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".stale", dir=target.parent))
    try:
        os.replace(target, trash / target.name)
    except FileNotFoundError:  # another process moved it first
        pass
    shutil.rmtree(trash, ignore_errors=True)


def _write_ground_truth(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _rng(seed: int, dataset: str, stream: str, index: int) -> np.random.Generator:
    key = [seed, zlib.crc32(dataset.encode()), zlib.crc32(stream.encode()), index]
    return np.random.default_rng(np.random.SeedSequence(key))


# --------------------------------------------------------------------------- image helpers


def _gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    return cv2.GaussianBlur(
        image, (0, 0), sigmaX=max(sigma_px, 0.3), borderType=cv2.BORDER_REPLICATE
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-std random field varying on a scale of about 1/cells of the image."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / (field.std() + 1e-6)


def _rotated_grid(shape, centre, radii, angle) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates around ``centre`` (px), rotated by ``angle``, divided by ``radii``."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32) + 0.5
    x, y = x - centre[0], y - centre[1]
    c, s = float(np.cos(angle)), float(np.sin(angle))
    return (c * x + s * y) / float(radii[0]), (-s * x + c * y) / float(radii[1])


def _to_uint(image: np.ndarray, levels: int) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * (levels - 1))


# --------------------------------------------------------------------------- chest radiographs


@dataclass(frozen=True)
class ChestAnatomy:
    """One patient's chest, in body units (thorax about [-1, 1]; v points to the feet)."""

    body_scale: float  # patient size relative to the detector
    thorax_half_width: float  # half the maximal inner thoracic width
    thorax_half_height: float
    cardiothoracic_ratio: float
    heart_right_share: float  # share of the heart width on the patient's right (image left)
    mediastinum_half_width: float
    diaphragm_level: float
    rib_spacing: float

    @classmethod
    def sample(cls, rng: np.random.Generator, ctr_range: tuple[float, float]) -> ChestAnatomy:
        return cls(
            body_scale=rng.uniform(0.85, 1.02),
            thorax_half_width=rng.uniform(0.6, 0.7),
            thorax_half_height=rng.uniform(0.86, 0.96),
            cardiothoracic_ratio=rng.uniform(*ctr_range),
            heart_right_share=rng.uniform(0.33, 0.42),
            mediastinum_half_width=rng.uniform(0.1, 0.14),
            diaphragm_level=rng.uniform(0.5, 0.58),
            rib_spacing=rng.uniform(0.13, 0.16),
        )


def _chest_body_coordinates(anatomy: ChestAnatomy, size: int, rng: np.random.Generator):
    """Body coordinates (u, v) of every pixel for one exposure: patient position and tilt vary."""
    half = size / 2
    centre = (half * (1 + rng.uniform(-0.06, 0.06)), half * (1 + rng.uniform(-0.05, 0.07)))
    radius = half * anatomy.body_scale
    return _rotated_grid((size, size), centre, (radius, radius), np.deg2rad(rng.uniform(-4, 4)))


def _chest_anatomy_image(anatomy: ChestAnatomy, u: np.ndarray, v: np.ndarray, rng):
    """Attenuation-like image (air dark, bone bright) and the lung-field mask, before blur.

    The thoracic cavity is an ellipse whose widest level (the maximal inner thoracic width,
    ``2 * thorax_half_width``) lies above the diaphragm; the heart is a two-sided ellipse of
    maximal width ``cardiothoracic_ratio * 2 * thorax_half_width`` resting on the diaphragm.
    """
    a_t, b_t, centre_v = anatomy.thorax_half_width, anatomy.thorax_half_height, 0.12
    body = ((u / 0.95) ** 4 + ((v - 0.3) / 1.4) ** 4 <= 1) | ((np.abs(u) < 0.24) & (v < -0.5))
    thorax = (u / a_t) ** 2 + ((v - centre_v) / b_t) ** 2 <= 1
    chest_wall = (u / (a_t + 0.07)) ** 2 + ((v - centre_v) / (b_t + 0.06)) ** 2 <= 1
    dome = 0.1 * np.exp(-(((np.abs(u) - 0.5 * a_t) / (0.4 * a_t)) ** 2))
    diaphragm = anatomy.diaphragm_level - dome - 0.03 * (u < 0)  # liver side sits higher
    above_diaphragm = v < diaphragm
    mediastinum = (np.abs(u) < anatomy.mediastinum_half_width) & (v > centre_v - b_t)

    heart_width = 2 * anatomy.cardiothoracic_ratio * a_t
    heart_half_height = 0.42 * heart_width + 0.05
    heart_centre_v = anatomy.diaphragm_level - 0.14 - 0.3 * heart_half_height  # widest level
    # stays above both hemidiaphragms, whose domes rise at most 0.13 above diaphragm_level
    right_width = anatomy.heart_right_share * heart_width
    heart_half_width = np.where(u < 0, right_width, heart_width - right_width)
    heart = (u / heart_half_width) ** 2 + ((v - heart_centre_v) / heart_half_height) ** 2 <= 1

    lungs = thorax & above_diaphragm & ~mediastinum & ~heart
    rib_phase = (v - 0.35 * (u / a_t) ** 2) / anatomy.rib_spacing
    ribs = np.exp(-(((rib_phase - np.round(rib_phase)) * anatomy.rib_spacing / 0.022) ** 2))
    ribs *= chest_wall & above_diaphragm & ~mediastinum
    clavicles = np.abs(v - (centre_v - 0.8 * b_t) + 0.12 * np.abs(u)) < 0.035
    clavicles &= (np.abs(u) > 0.08) & (np.abs(u) < a_t + 0.1)
    gastric_bubble = ((u - 0.5 * a_t) / 0.1) ** 2 + (
        (v - anatomy.diaphragm_level - 0.04) / 0.05
    ) ** 2 < 1

    image = np.full(u.shape, 0.03, np.float32)
    image[body] = (0.42 + 0.14 * (1 - (u / 0.95) ** 2))[body]  # thicker tissue at the midline
    image[body & ~above_diaphragm] = 0.58
    image[gastric_bubble] = 0.38
    image[chest_wall & above_diaphragm] = 0.56
    hilar_markings = 0.12 * np.exp(-(np.abs(u) - anatomy.mediastinum_half_width) / 0.22)
    lung_texture = 0.03 * _smooth_noise(rng, u.shape, 24)
    image = np.where(lungs, 0.13 + hilar_markings + lung_texture, image)
    image += 0.08 * ribs + 0.1 * clavicles
    image[mediastinum & body] = 0.68
    image[(np.abs(u) < 0.055) & body] = 0.78  # spine
    image[heart & above_diaphragm] = 0.7
    return image, lungs


def _add_consolidations(image, lungs, u, v, rng, kind: str) -> float:
    """Paint pneumonic consolidations into the lungs; return the opacified share of lung area.

    Bacterial pneumonia: lobar, one lung, one or two dense patches.  Viral: both lungs,
    several fainter, patchier ones.  Each affected lung field is opacified over 15-40 %.
    """
    bacterial = kind == "bacteria"
    sides = [rng.integers(2)] if bacterial else [0, 1]
    opacity = np.zeros_like(image)
    for side in sides:
        field_mask = lungs & ((u < 0) if side == 0 else (u >= 0))
        ys, xs = np.nonzero(field_mask)
        field = 0.6 * _smooth_noise(rng, image.shape, 10 if bacterial else 16)
        for blob in rng.integers(
            0, len(ys), size=rng.integers(1, 3) if bacterial else rng.integers(2, 5)
        ):
            du, dv = u - u[ys[blob], xs[blob]], v - v[ys[blob], xs[blob]]
            field += 2 * np.exp(-(du**2 + dv**2) / (2 * rng.uniform(0.1, 0.18) ** 2))
        share = rng.uniform(*CONSOLIDATED_LUNG_FIELD_RANGE)
        threshold = np.quantile(field[field_mask], 1 - share)
        opacity[field_mask & (field > threshold)] = 1.0
    opacity = _gaussian_blur(opacity, 0.015 * image.shape[0]) * lungs
    density = rng.uniform(0.36, 0.44) if bacterial else rng.uniform(0.26, 0.34)
    image += density * opacity * (1 + 0.15 * _smooth_noise(rng, image.shape, 20))
    return float((opacity > 0.5).sum() / lungs.sum())


def _add_ground_glass(image, lungs, u, v, rng) -> float:
    """Paint COVID-19-like ground-glass opacities: both lungs, peripheral and lower-zone,
    faint and blurred; return the opacified share of lung area (15-40 % of each field)."""
    opacity = np.zeros_like(image)
    for side in (-1, 1):
        field_mask = lungs & (side * u > 0)
        ys, xs = np.nonzero(field_mask)
        lateral = np.abs(u) / (np.abs(u[field_mask]).max() + 1e-6)
        lower = (v - v[field_mask].min()) / (np.ptp(v[field_mask]) + 1e-6)
        field = 1.5 * lateral + 1.2 * lower + 0.5 * _smooth_noise(rng, image.shape, 14)
        for blob in rng.integers(0, len(ys), size=rng.integers(2, 5)):
            du, dv = u - u[ys[blob], xs[blob]], v - v[ys[blob], xs[blob]]
            field += 0.6 * np.exp(-(du**2 + dv**2) / (2 * rng.uniform(0.08, 0.14) ** 2))
        share = rng.uniform(*CONSOLIDATED_LUNG_FIELD_RANGE)
        threshold = np.quantile(field[field_mask], 1 - share)
        opacity[field_mask & (field > threshold)] = 1.0
    opacity = _gaussian_blur(opacity, 0.025 * image.shape[0]) * lungs
    image += rng.uniform(0.24, 0.3) * opacity * (1 + 0.25 * _smooth_noise(rng, image.shape, 24))
    return float((opacity > 0.5).sum() / lungs.sum())


def _radiograph_acquisition(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unsharpness, exposure (contrast, brightness, gamma) and quantum noise of one film."""
    size = image.shape[0]
    image = _gaussian_blur(image, rng.uniform(0.006, 0.012) * size)
    image = np.clip(image * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05), 0, 1)
    image = image ** rng.uniform(0.8, 1.25)
    image = image + rng.normal(0, rng.uniform(0.01, 0.03), image.shape).astype(np.float32)
    return np.clip(_gaussian_blur(image, 0.4 * size / 256), 0, 1)


def _chest_radiograph(anatomy: ChestAnatomy, size: int, rng, pneumonia: str | None = None):
    u, v = _chest_body_coordinates(anatomy, size, rng)
    image, lungs = _chest_anatomy_image(anatomy, u, v, rng)
    if pneumonia == "covid":
        opacified = _add_ground_glass(image, lungs, u, v, rng)
    else:
        opacified = _add_consolidations(image, lungs, u, v, rng, pneumonia) if pneumonia else 0.0
    return _radiograph_acquisition(image, rng), opacified


def _write_cardiomegaly(folder: Path, size: int, per_class: int, seed: int) -> list[dict]:
    labels = ["normal"] * per_class + ["cardiomegaly"] * per_class
    labels = [
        labels[i] for i in _rng(seed, "cardiomegaly", "numbering", 0).permutation(len(labels))
    ]
    for label in ("normal", "cardiomegaly"):
        (folder / label).mkdir()
    rows = []
    for number, label in enumerate(labels, start=1):
        rng = _rng(seed, "cardiomegaly", "image", number)
        ctr_range = CARDIOMEGALY_CTR_RANGE if label == "cardiomegaly" else NORMAL_CTR_RANGE
        anatomy = ChestAnatomy.sample(rng, ctr_range)
        image, _ = _chest_radiograph(anatomy, size, rng)
        path = Path(label) / f"CXR_{number:05d}.tif"
        tifffile.imwrite(
            folder / path, (_to_uint(image, 4096) * 16).astype(np.uint16), metadata=None
        )
        rows.append(
            {"path": path.as_posix(), "label": label, "ctr": f"{anatomy.cardiothoracic_ratio:.4f}"}
        )
    return rows


def _write_covid3(folder: Path, size: int, per_class: int, seed: int) -> list[dict]:
    labels = [name for name in COVID3_CLASSES for _ in range(per_class)]
    labels = [labels[i] for i in _rng(seed, "covid3", "numbering", 0).permutation(len(labels))]
    for label in COVID3_CLASSES:
        (folder / label).mkdir()
    rows = []
    for number, label in enumerate(labels, start=1):
        rng = _rng(seed, "covid3", "image", number)
        anatomy = ChestAnatomy.sample(rng, NORMAL_CTR_RANGE)
        kind = {"normal": None, "COVID-19": "covid"}.get(label)
        if label == "pneumonia":
            kind = "bacteria" if rng.random() < 0.65 else "virus"
        image, opacified = _chest_radiograph(anatomy, size, rng, pneumonia=kind)
        path = Path(label) / f"CXR_{number:05d}.png"
        Image.fromarray(_to_uint(image, 256).astype(np.uint8), "L").save(folder / path)
        rows.append(
            {"path": path.as_posix(), "label": label, "opacified_lung_fraction": f"{opacified:.4f}"}
        )
    return rows


# --------------------------------------------------------------------------- pneumonia (Kaggle)


def _split_patients(n_patients: int, rng: np.random.Generator) -> list[str]:
    """Given split of each patient, about 70/10/20, every split non-empty from 3 patients on."""
    n_val = max(1, round(PNEUMONIA_SPLIT_SHARES["val"] * n_patients)) if n_patients >= 3 else 0
    n_test = max(1, round(PNEUMONIA_SPLIT_SHARES["test"] * n_patients)) if n_patients >= 2 else 0
    splits = ["val"] * n_val + ["test"] * n_test
    splits += ["train"] * (n_patients - len(splits))
    return [splits[i] for i in rng.permutation(n_patients)]


def _pneumonia_file_names(label: str, per_class: int, rng) -> list[tuple[str, list[str]]]:
    """(patient id, file names) per patient, in Kaggle naming, exactly ``per_class`` files."""
    patients, n_files, running = [], 0, 0
    while n_files < per_class:
        number = len(patients) + 1
        if label == "NORMAL":
            n_images = min(1 + (rng.random() < 0.15), per_class - n_files)
            patient = ("NORMAL2-" if rng.random() < 0.5 else "") + f"IM-{number:04d}"
            names = [f"{patient}-{k:04d}.jpeg" for k in range(1, n_images + 1)]
        else:
            n_images = min(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]), per_class - n_files)
            patient, kind = f"person{number}", "bacteria" if rng.random() < 0.65 else "virus"
            names = [f"{patient}_{kind}_{running + k}.jpeg" for k in range(1, n_images + 1)]
            running += n_images
        patients.append((patient, names))
        n_files += n_images
    return patients


def _write_pneumonia(folder: Path, size: int, per_class: int, seed: int) -> list[dict]:
    rows = []
    for label in ("NORMAL", "PNEUMONIA"):
        patients = _pneumonia_file_names(
            label, per_class, _rng(seed, "pneumonia", f"names/{label}", 0)
        )
        splits = _split_patients(len(patients), _rng(seed, "pneumonia", f"split/{label}", 0))
        for index, ((patient, names), split) in enumerate(zip(patients, splits, strict=True)):
            anatomy = ChestAnatomy.sample(
                _rng(seed, "pneumonia", f"anatomy/{label}", index), NORMAL_CTR_RANGE
            )
            (folder / split / label).mkdir(parents=True, exist_ok=True)
            for name in names:
                rng = _rng(seed, "pneumonia", f"image/{label}", len(rows))
                kind = None if label == "NORMAL" else name.split("_")[1]
                image, opacified = _chest_radiograph(anatomy, size, rng, pneumonia=kind)
                path = Path(split) / label / name
                Image.fromarray(_to_uint(image, 256).astype(np.uint8), "L").save(
                    folder / path, quality=90
                )
                rows.append(
                    {
                        "path": path.as_posix(),
                        "label": label,
                        "split": split,
                        "patient_id": patient,
                        "opacified_lung_fraction": f"{opacified:.4f}",
                    }
                )
    return rows


# --------------------------------------------------------------------------- brain MRI (navoneel)


def _brain_mri_slice(size: int, tumour_radius: float, rng: np.random.Generator) -> np.ndarray:
    """Axial T1-weighted-like slice: scalp, bright skull ring, textured brain, dark ventricles.

    ``tumour_radius`` (mean radius as a fraction of the head radius, 0 for none) adds a
    bright enhancing mass, in half the cases with a dark necrotic core, in a darker edema halo.
    """
    height, width = (round(size * rng.uniform(0.75, 1.3)) for _ in range(2))
    ry = height * rng.uniform(0.34, 0.45)
    rx = min(ry * rng.uniform(0.78, 0.92), width * 0.45)
    centre = (
        width / 2 + rng.uniform(-0.4, 0.4) * (width / 2 - rx),
        height / 2 + rng.uniform(-0.4, 0.4) * (height / 2 - ry),
    )
    p, q = _rotated_grid((height, width), centre, (rx, ry), np.deg2rad(rng.uniform(-10, 10)))
    r = np.hypot(p, q)
    brain = r < 0.84

    image = np.zeros((height, width), np.float32)
    image[r < 1.0] = 0.5  # scalp fat
    image[r < 0.93] = 0.88  # skull ring
    image[r < 0.87] = 0.12  # CSF rim
    white_matter = r + 0.06 * _smooth_noise(rng, image.shape, 8) < 0.66
    gyri = 0.035 * _smooth_noise(rng, image.shape, 22)
    image = np.where(brain, np.where(white_matter, 0.56, 0.42) + gyri, image)
    ventricle_scale = rng.uniform(0.8, 1.3)
    for side in (-1, 1):
        vp, vq = p - side * 0.1, q + 0.05
        c, s = np.cos(side * 0.35), np.sin(side * 0.35)
        vp, vq = c * vp + s * vq, -s * vp + c * vq
        image[(vp / (0.06 * ventricle_scale)) ** 2 + (vq / (0.2 * ventricle_scale)) ** 2 < 1] = 0.08

    if tumour_radius > 0:
        edema_extent = rng.uniform(1.3, 1.8)
        reach, angle = rng.uniform(0, 0.8 - 1.1 * tumour_radius), rng.uniform(0, 2 * np.pi)
        tp, tq = p - reach * np.cos(angle), q - reach * np.sin(angle)
        phi = np.arctan2(tq, tp)
        lobes = sum(
            rng.uniform(0, 0.12) * np.cos(k * phi + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
        )
        rho = np.hypot(tp, tq) / (tumour_radius * (1 + lobes))
        image = np.where(brain & (rho < edema_extent), image * 0.6, image)
        image[brain & (rho < 1)] = rng.uniform(0.9, 1.0)
        if rng.random() < 0.5:
            image[brain & (rho < rng.uniform(0.35, 0.6))] = 0.15

    image = _gaussian_blur(image, rng.uniform(0.4, 0.9) * size / 256)
    image = np.clip(image * rng.uniform(0.85, 1.1), 0, 1) ** rng.uniform(0.8, 1.2)
    sigma = rng.uniform(0.01, 0.035)  # magnitude image: Rician noise, dark background stays dark
    return np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))


def _brain_mri_file_name(label: str, number: int, rng) -> str:
    if label == "yes":
        return f"Y{number}.JPG" if rng.random() < 0.2 else f"Y{number}.jpg"
    patterns = [f"no {number}.jpg", f"No{number}.jpg", f"{number} no.jpeg", f"N{number}.JPG"]
    return patterns[rng.choice(len(patterns), p=[0.35, 0.3, 0.25, 0.1])]


def _write_brain_mri(folder: Path, size: int, per_class: int, seed: int) -> list[dict]:
    rows = []
    for label in ("yes", "no"):
        (folder / label).mkdir()
        for number in range(1, per_class + 1):
            rng = _rng(seed, "brain_mri", label, number)
            radius = rng.uniform(*TUMOUR_RADIUS_RANGE) if label == "yes" else 0.0
            pixels = _to_uint(_brain_mri_slice(size, radius, rng), 256).astype(np.uint8)
            image = Image.fromarray(pixels, "L")
            if rng.random() < 0.2:  # the real set mixes grayscale and RGB-stored files
                image = image.convert("RGB")
            path = Path(label) / _brain_mri_file_name(label, number, rng)
            image.save(folder / path, format="JPEG", quality=int(rng.integers(80, 96)))
            rows.append({"path": path.as_posix(), "label": label, "tumour_radius": f"{radius:.4f}"})
    return rows


_DATASET_WRITERS = {
    "cardiomegaly": _write_cardiomegaly,
    "pneumonia": _write_pneumonia,
    "brain_mri": _write_brain_mri,
    "covid3": _write_covid3,
}
