"""The prediction job (``python predict.py ckpt_path=FILE inputs=DIR_OR_FILE_OR_GLOB``):
class probabilities for new images, no labels needed, with Lightning's ``trainer.predict``.

Every file is read and pre-processed as the checkpoint's training did. The prediction
folder gets ``predictions.csv`` (path, one ``prob_<class>`` column per class, the predicted
class at the model's threshold), ``unreadable.csv`` when some files could not be read
(they are skipped, never fatal) and, with ``predict.saliency=true``, a Grad-CAM overlay per
image in ``saliency/``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from medrepro.callbacks.failure_gallery import model_input_box
from medrepro.core.distributed import is_first_process
from medrepro.core.run_folder import PREDICTIONS_CSV, write_atomic
from medrepro.core.saliency_overlay import overlay_on_original, save_png
from medrepro.datamodules.data_settings import LoaderSettings, settings_from
from medrepro.datamodules.image_dataset import as_tensor, preprocess_image
from medrepro.datamodules.sources.input_files import input_files
from medrepro.datamodules.transforms.image_reader import DEFAULT_MAX_IMAGE_PIXELS, read_image
from medrepro.datamodules.unlabelled_images import UnlabelledImages, collate_readable
from medrepro.jobs.job_steps import FIRST_STEP, enter_step
from medrepro.jobs.trained_model import TrainedModel, load_trained_model
from medrepro.jobs.training import build_trainer
from medrepro.lightning_modules.saliency import grad_cam_maps

log = logging.getLogger(__name__)
UNREADABLE_CSV = "unreadable.csv"
SALIENCY_FOLDER = "saliency"


def predict(cfg: DictConfig) -> dict[str, float]:
    """Run the prediction job; return how many files were predicted and skipped."""
    enter_step(FIRST_STEP)
    files = input_files(cfg.get("inputs"))  # a wrong path stops before the model is loaded
    output_dir = Path(cfg.paths.output_dir)
    enter_step("model_building")
    trained = load_trained_model(cfg.get("ckpt_path"))
    max_pixels = int(cfg.predict.get("max_image_pixels") or DEFAULT_MAX_IMAGE_PIXELS)
    loader_settings = settings_from(LoaderSettings, {"batch_size": cfg.trainer.batch_size,
                                                     "num_workers": cfg.predict.num_workers},
                                    "predict").resolved()
    dataset = UnlabelledImages(files, trained.channels, trained.pipeline(), max_pixels)
    loader = DataLoader(dataset, batch_size=loader_settings.batch_size,
                        num_workers=loader_settings.num_workers, collate_fn=collate_readable)
    trainer = build_trainer(cfg, [], False, output_dir)
    enter_step("testing")
    log.info("Predicting %d file(s) with %s", len(files), trained.checkpoint)
    batches = trainer.predict(trained.classifier, dataloaders=loader, return_predictions=True)
    if not is_first_process():
        return {}
    table, unreadable = _tables(batches, trained)
    if cfg.predict.saliency and len(table):
        table["saliency"] = write_saliency(trained, table, output_dir / SALIENCY_FOLDER,
                                           cfg.predict.get("target_layer"), max_pixels,
                                           loader_settings.batch_size)
    write_atomic(output_dir / PREDICTIONS_CSV, table.to_csv(index=False))
    if unreadable:
        write_atomic(output_dir / UNREADABLE_CSV,
                     pd.DataFrame(unreadable, columns=["path", "reason"]).to_csv(index=False))
        log.warning("Skipped %d file(s) that cannot be read; %s lists them with the reason.",
                    len(unreadable), output_dir / UNREADABLE_CSV)
    log.info("Predictions of %d image(s): %s", len(table), (output_dir / PREDICTIONS_CSV).resolve())
    return {"predicted": float(len(table)), "unreadable": float(len(unreadable))}


def _tables(batches: list[dict], trained: TrainedModel) -> tuple[pd.DataFrame, list]:
    names = trained.class_names
    paths = [p for batch in batches for p in batch["path"]]
    unreadable = [tuple(u) for batch in batches for u in batch["unreadable"]]
    probabilities = torch.cat([b["probabilities"] for b in batches]) if paths else torch.empty(0, len(names))
    predicted = torch.cat([b["predicted"] for b in batches]) if paths else torch.empty(0, dtype=torch.long)
    frame = pd.DataFrame({"path": paths})
    for index, name in enumerate(names):
        frame[f"prob_{name}"] = probabilities[:, index].numpy()
    frame["predicted"] = [names[i] for i in predicted.tolist()]
    if len(names) == 2:  # positive when its probability >= the threshold (the training's choice)
        frame["threshold"] = trained.threshold
    return frame, unreadable


def write_saliency(trained: TrainedModel, table: pd.DataFrame, folder: Path,
                   target_layer: str | None, max_pixels: int, batch_size: int) -> list[str]:
    """A Grad-CAM overlay of the predicted class for every predicted image, drawn on the
    original grayscale image at its own resolution; returns the files, in ``table``'s order."""
    index = {name: i for i, name in enumerate(trained.class_names)}
    pipeline = trained.pipeline()
    names = _overlay_names(table["path"].tolist())
    written = []
    for start in range(0, len(table), batch_size):
        rows = table.iloc[start:start + batch_size]
        images = torch.stack([as_tensor(preprocess_image(p, trained.channels, pipeline, max_pixels))
                              for p in rows["path"]])
        maps = grad_cam_maps(trained.classifier, images, [index[c] for c in rows["predicted"]],
                             target_layer)
        for path, cam, name in zip(rows["path"], maps, names[start:start + batch_size]):
            original = read_image(path, 1, max_pixels)
            # where the model's input lies in the original (the brain crop), else the whole image
            box = model_input_box(pipeline, read_image(path, trained.channels, max_pixels))
            target = folder / name
            save_png(target, overlay_on_original(original, cam, box))
            written.append(str(target))
    log.info("Grad-CAM overlays: %s", folder.resolve())
    return written


def _overlay_names(paths: list[str]) -> list[str]:
    """``<file stem>.png`` per image; where two files share a stem, their paths below the
    folder the inputs have in common, with ``__`` for ``/`` (``sub__a.jpg.png``)."""
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return [f"{s}.png" for s in stems]
    absolute = [os.path.abspath(p) for p in paths]
    common = os.path.commonpath(absolute) if len(absolute) > 1 else os.path.dirname(absolute[0])
    return [os.path.relpath(p, common).replace(os.sep, "__") + ".png" for p in absolute]
