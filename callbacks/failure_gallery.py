"""``gallery/``: the test images a run got most confidently wrong (and right), each with its
Grad-CAM heat map on the original image, to see what the model looked at."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from medrepro.core.errors import ConfigError
from medrepro.core.figures import save_figure
from medrepro.core.run_folder import GALLERY_FOLDER, PREDICTIONS_CSV, class_key, write_atomic
from medrepro.core.saliency_overlay import Box, cam_on_original, cam_peak, overlay_on_original
from medrepro.datamodules.transforms.brain_crop import CropToBrain, brain_box
from medrepro.datamodules.transforms.image_reader import read_image
from medrepro.lightning_modules.saliency import grad_cam_maps, target_layer_name

log = logging.getLogger(__name__)

GALLERY_CSV = "gallery.csv"
GALLERY_COLUMNS = ["group", "path", "label", "predicted", "probability", "explained_class",
                   "peak_x", "peak_y", "target_layer"]
# pre-processing steps after which the model input still shows the whole image (stretched)
WHOLE_VIEW_STEPS = (A.Resize, A.LongestMaxSize, A.SmallestMaxSize)
COLUMNS_PER_ROW = 4


class FailureGallery(pl.Callback):
    """Once the test has ended, one PNG per group of test images in ``<run>/gallery/``:

    * binary tasks: ``false_positives.png`` (negatives with the highest probability of the
      positive class among those predicted positive), ``false_negatives.png`` (positives
      with the lowest probability among those predicted negative);
    * more classes: ``misclassified.png`` (wrong predictions, highest probability of the
      predicted class first);
    * ``correct_<class>.png`` per class: correct predictions, most confident first.

    Up to ``size`` images per group, each drawn on the original file in grayscale at its own
    resolution with the Grad-CAM heat map of the predicted class (the true class for a
    correct one) at ``target_layer`` (``None``: the model family's default, see
    :mod:`medrepro.lightning_modules.saliency`); an empty group writes no file.
    ``gallery.csv`` lists every image drawn: group, path, label, predicted, probability (as
    predictions.csv: binary, of the positive class; else of the predicted class), the class
    explained and the heat map's peak (``peak_x`` column, ``peak_y`` row, original pixels).

    Reads ``predictions.csv`` (written at the end of the test epoch) and the images through
    the data module's own pre-processing (``model_input``); the heat maps come from the
    module in memory, which holds the tested weights. A gallery is a by-product: whatever
    goes wrong while drawing it is logged as a warning and never fails the run. Only a
    ``target_layer`` that names no module of the model stops the run, before training.
    """

    def __init__(self, output_dir: str, size: int = 4, target_layer: str | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(
                f"callbacks.failure_gallery.size must be a whole number of images per group, "
                f"at least 1, not {size!r}; ~callbacks.failure_gallery turns the gallery off."
            )
        self.run_dir = Path(output_dir)
        self.folder = self.run_dir / GALLERY_FOLDER
        self.size = size
        self.target_layer = None if target_layer in (None, "") else str(target_layer)
        self._test_started = 0.0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        backbone = getattr(pl_module, "backbone", None)
        if self.target_layer is not None and backbone is not None:
            # a wrong name stops the run now, not after the training
            target_layer_name(_model_name(pl_module), backbone, self.target_layer)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test_started = time.time()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        try:
            self.write(trainer, pl_module)
        except Exception as error:  # noqa: BLE001  (a by-product never fails the run)
            log.warning("The failure gallery was not drawn (%s: %s).", type(error).__name__, error)

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        predictions = self._fresh_predictions()
        if predictions is None:
            return
        names = list(pl_module.class_names)
        groups = gallery_groups(predictions, names, self.size)
        for stale in [*self.folder.glob("*.png"), self.folder / GALLERY_CSV]:
            stale.unlink(missing_ok=True)  # a gallery of earlier weights (a resumed run)
        layer = target_layer_name(_model_name(pl_module), pl_module.backbone, self.target_layer)
        rows = []
        for group, chosen in groups.items():
            try:
                rows += self._draw_group(group, chosen, trainer.datamodule, pl_module, layer, names)
            except Exception as error:  # noqa: BLE001
                log.warning("Gallery group %s was not drawn (%s: %s).", group,
                            type(error).__name__, error)
        if rows:
            table = pd.DataFrame(rows, columns=GALLERY_COLUMNS)
            write_atomic(self.folder / GALLERY_CSV, table.to_csv(index=False))

    def _fresh_predictions(self) -> pd.DataFrame | None:
        """This test's predictions.csv (not one an earlier test left in the run folder)."""
        path = self.run_dir / PREDICTIONS_CSV
        if not path.is_file() or path.stat().st_mtime < self._test_started - 2:
            log.info("No predictions.csv of this test in %s: no failure gallery.", self.run_dir)
            return None
        predictions = pd.read_csv(path)
        return predictions if len(predictions) else None

    def _draw_group(self, group, chosen, datamodule, pl_module, layer, names) -> list[dict]:
        items, views = [], []
        for item in chosen.itertuples(index=False):
            try:
                views.append(_view(item.path, datamodule))
                items.append(item)
            except Exception as error:  # noqa: BLE001  (an unreadable file, ...)
                log.warning("Gallery image %s was skipped (%s: %s).", item.path,
                            type(error).__name__, error)
        if not items:
            return []
        cams = _grad_cams(pl_module, [view[1] for view in views],
                          [int(item.predicted_index) for item in items], layer)
        tiles, rows = [], []
        for item, (original, _, box), cam in zip(items, views, cams):
            peak_x, peak_y = cam_peak(cam_on_original(cam, original.shape, box))
            tiles.append((overlay_on_original(original, cam, box), _title(item, names)))
            rows.append({"group": group, "path": item.path, "label": item.label,
                         "predicted": item.predicted, "probability": item.probability,
                         "explained_class": item.predicted, "peak_x": peak_x,
                         "peak_y": peak_y, "target_layer": layer})
        draw_grid(tiles, self.folder / f"{group}.png", _group_title(group, names, chosen))
        return rows


def _view(path: str, datamodule) -> tuple[np.ndarray, torch.Tensor, Box | None]:
    """The original (grayscale, its own resolution), the model input made from it and the
    part of the original that input shows."""
    limit = datamodule.checks.pixel_limit
    original = read_image(path, 1, limit)
    channels = datamodule.channels
    as_read = original if channels == 1 else read_image(path, channels, limit)
    return original, datamodule.model_input(path), model_input_box(datamodule.pipeline, as_read)


def _grad_cams(pl_module, inputs: list[torch.Tensor], classes: list[int], layer: str) -> list:
    """Heat maps of ``inputs`` (``[C, H, W]`` each), in one batch per input size."""
    cams: list = [None] * len(inputs)
    sizes = sorted({tuple(x.shape) for x in inputs})
    for size in sizes:
        chosen = [i for i, x in enumerate(inputs) if tuple(x.shape) == size]
        batch = torch.stack([inputs[i] for i in chosen])
        maps = grad_cam_maps(pl_module, batch, [classes[i] for i in chosen], layer)
        for i, cam in zip(chosen, maps):
            cams[i] = cam
    return cams


def gallery_groups(
    predictions: pd.DataFrame, class_names: list[str], size: int
) -> dict[str, pd.DataFrame]:
    """Group name -> up to ``size`` rows of predictions.csv, most confident first (module
    docstring of :class:`FailureGallery`); empty groups are left out."""
    truth, predicted = predictions["label_index"], predictions["predicted_index"]
    wrong = predictions[truth != predicted]
    groups = {}
    if len(class_names) == 2:
        groups["false_positives"] = wrong[wrong["label_index"] == 0].sort_values(
            "probability", ascending=False, kind="stable")
        groups["false_negatives"] = wrong[wrong["label_index"] == 1].sort_values(
            "probability", ascending=True, kind="stable")
    else:
        groups["misclassified"] = wrong.sort_values("probability", ascending=False, kind="stable")
    for index, name in enumerate(class_names):
        right = predictions[(truth == index) & (predicted == index)]
        groups[f"correct_{class_key(name)}"] = right.sort_values(
            f"prob_{name}", ascending=False, kind="stable")
    return {group: rows.head(size) for group, rows in groups.items() if len(rows)}


def model_input_box(pipeline, image: np.ndarray) -> Box | None:
    """``(top, bottom, left, right)`` (inclusive) of the part of ``image`` (as read, with the
    data set's channels) that the model input made by ``pipeline`` shows, stretched to the
    input's size: the whole image after resizing steps, the head's box after
    :class:`CropToBrain`. ``None`` when a step moves the view in a way not known here (the
    heat map is then stretched over the whole image)."""
    height, width = image.shape[:2]
    box = (0.0, float(height), 0.0, float(width))  # top, bottom, left, right (exclusive ends)
    steps = _flat_steps(pipeline)
    crops = [i for i, step in enumerate(steps) if isinstance(step, CropToBrain)]
    for index, step in enumerate(steps):
        if isinstance(step, CropToBrain):
            found = brain_box(image, step.threshold, step.blur, step.opening_iterations,
                              step.margin)
            if found is not None:
                top, bottom, left, right = found
                scale_y = (box[1] - box[0]) / image.shape[0]
                scale_x = (box[3] - box[2]) / image.shape[1]
                box = (box[0] + top * scale_y, box[0] + (bottom + 1) * scale_y,
                       box[2] + left * scale_x, box[2] + (right + 1) * scale_x)
        elif not isinstance(step, (*WHOLE_VIEW_STEPS, A.ImageOnlyTransform)):
            return None  # a crop, pad, flip, ... of its own
        if crops and index < crops[-1]:  # a later crop looks at this step's result
            image = step(image=image)["image"]
    return (round(box[0]), round(box[1]) - 1, round(box[2]), round(box[3]) - 1)


def _flat_steps(pipeline) -> list:
    if pipeline is None:
        return []
    if isinstance(pipeline, A.BaseCompose):
        return [step for part in pipeline.transforms for step in _flat_steps(part)]
    return [pipeline]


def draw_grid(tiles: list[tuple[np.ndarray, str]], path: Path, title: str) -> Path:
    """The overlays side by side (up to four a row), each with its title."""
    import matplotlib.pyplot as plt  # medrepro.core.figures has chosen the Agg backend

    columns = min(len(tiles), COLUMNS_PER_ROW)
    rows = math.ceil(len(tiles) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.9 * rows + 0.4),
                                squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (rgb, caption) in zip(axes.ravel(), tiles):
        axis.imshow(rgb, interpolation="bilinear")
        axis.set_title(caption, fontsize=8)
    figure.suptitle(title)
    return save_figure(figure, path)


def _title(item, names: list[str]) -> str:
    file = Path(str(item.path)).name
    file = file if len(file) <= 30 else f"...{file[-27:]}"
    which = names[1] if len(names) == 2 else item.predicted
    return (f"{file}\ntrue {item.label}, predicted {item.predicted}\n"
            f"p({which}) = {item.probability:.3f}")


def _group_title(group: str, names: list[str], chosen: pd.DataFrame) -> str:
    if group == "false_positives":
        return f"false positives: {names[0]} predicted {names[1]} (most confident first)"
    if group == "false_negatives":
        return f"false negatives: {names[1]} predicted {names[0]} (most confident first)"
    if group == "misclassified":
        return "misclassified (most confident first)"
    return f"correct {chosen['label'].iloc[0]} (most confident first)"


def _model_name(pl_module: pl.LightningModule) -> str:
    hparams = getattr(pl_module, "hparams", {}) or {}
    return str(hparams.get("name") or type(getattr(pl_module, "backbone", pl_module)).__name__)

