"""The evaluation job (``python eval.py ckpt_path=FILE [data=NAME data.root=DIR]``): a
trained checkpoint tested on any data set, e.g. another hospital's images (external
validation), with Lightning's ``trainer.test``. The eval folder holds what a training
run's test stage writes (results.json, predictions.csv, plots, the failure gallery) and a
model card.

The images are read and pre-processed as the checkpoint's training run did (its
``data.channels``, ``data.image_size`` and ``data.preprocess``: resize, crop, ENH), never
as the evaluated data set's config says; the normalisation is inside the model. The data
set's classes are mapped to the model's (``eval.class_map``); other classes are left out
and counted. ``eval.split=test`` evaluates the data set's test split (for the training's
own data set and seed: the very images the training run tested), ``eval.split=all``
every image.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from medrepro.core.distributed import is_first_process
from medrepro.core.errors import ConfigError
from medrepro.core.run_folder import read_results, write_results
from medrepro.datamodules.sources.class_mapping import ClassMappedSource
from medrepro.jobs.job_steps import FIRST_STEP, enter_step
from medrepro.jobs.model_card import write_model_card
from medrepro.jobs.report.run_report import write_run_report_after_job
from medrepro.jobs.trained_model import TrainedModel, load_trained_model
from medrepro.jobs.training import build_callbacks, build_trainer

log = logging.getLogger(__name__)
SPLITS_EVALUATED = ("test", "all")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the evaluation job; return its test metrics (``test/auroc``, ...)."""
    enter_step(FIRST_STEP)
    split = str(cfg.eval.split)
    if split not in SPLITS_EVALUATED:
        raise ConfigError(f"eval.split must be test (the data set's test split) or all (every "
                          f"image), not {split}.")
    output_dir = Path(cfg.paths.output_dir)
    enter_step("model_building")
    trained = load_trained_model(cfg.get("ckpt_path"))
    _take_training_settings(cfg, trained)

    enter_step("data_loading")
    class_map = OmegaConf.to_container(cfg.eval.class_map, resolve=True) if cfg.eval.class_map else {}
    datamodule = _data_module(cfg, trained, class_map)
    datamodule.prepare_data()
    datamodule.setup_for_evaluation(split)
    source = datamodule.source
    callbacks = build_callbacks(cfg)
    trainer = build_trainer(cfg, callbacks, False, output_dir)

    enter_step("testing")
    tested = trainer.test(trained.classifier, datamodule=datamodule,
                          ckpt_path=str(trained.checkpoint), weights_only=True)[0]
    if is_first_process():
        _record_provenance(output_dir, trained, split, class_map, source)
        write_model_card(output_dir)
        write_run_report_after_job(output_dir)
        log.info("Eval folder: %s", output_dir.resolve())
    return tested


def _take_training_settings(cfg: DictConfig, trained: TrainedModel) -> None:
    """The training run's data set (when none is named), seed (when none is given: its
    split is then the training's) and pre-processing (always)."""
    with open_dict(cfg):
        if cfg.get("seed") is None:
            cfg.seed = trained.config.get("seed", 0)
        if cfg.get("data") is None:
            cfg.data = OmegaConf.create(trained.data_config)
        for key, value in trained.preprocessing().items():
            cfg.data[key] = value


def _data_module(cfg: DictConfig, trained: TrainedModel, class_map: dict):
    """The data set's module with the model's classes (in its output order) and the
    training's pre-processing."""
    own_source = hydra.utils.instantiate(cfg.data.source)  # a partial: source(root=...)
    source = functools.partial(_mapped_source, own_source, trained.class_names, class_map)
    return hydra.utils.instantiate(cfg.data, class_names=trained.class_names, positive_class=None,
                                   source=source, augment=None, _convert_="all")


def _mapped_source(own_source, model_classes, class_map, root):
    return ClassMappedSource(own_source(root=root), model_classes, class_map)


def _record_provenance(output_dir: Path, trained: TrainedModel, split: str, class_map: dict,
                       source) -> None:
    """results.json's ``evaluation``: the checkpoint, its training run and configuration,
    the split evaluated, the class map and the images left out per class."""
    results = read_results(output_dir) or {}
    results["evaluation"] = {
        **trained.describe(),
        "split": split,
        "class_map": class_map,
        "data_classes": list(getattr(source, "found_classes", [])),
        "left_out": dict(getattr(source, "left_out", {})),
        "training_config": trained.config,
    }
    write_results(output_dir / "results.json", results)
