"""Every option of every config group composes, resolves and builds with every option of
every other group (all pairs covered): the data module is set up and gives a training
batch, and the model, optimiser, scheduler, callbacks, logger and Trainer are built and
checked against what the options mean. On a machine without CUDA, ``trainer=gpu`` and
``trainer=ddp`` build their Trainer with ``accelerator=cpu`` instead (a warning in pytest's
summary says so). About 3 minutes on a 2-core CPU (43 models are built)."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import hydra
import pytest
import torch
from conftest import CONFIG_DIR, TINY_DEMO, compose_config, write_gray
from native_bf16 import cpu_runs_bf16_natively
from omegaconf import OmegaConf, open_dict
from pytorch_lightning.accelerators import CPUAccelerator
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy
from test_real_sources import kaggle_tree

from medrepro.core.errors import ConfigError
from medrepro.jobs.loggers import MLflowRunLogger, with_loggers
from medrepro.jobs.training import build_callbacks, build_model, build_trainer
from medrepro.lightning_modules.losses import BinaryCrossEntropy, CrossEntropy, OneHotCrossEntropy

# experiment, debug: tests/test_experiments.py; hparams_search: tests/test_hparams_search.py;
# cv (a multirun's sweep over the folds): tests/test_kfold.py
SKIPPED_GROUPS = {"hydra", "paths", "experiment", "debug", "hparams_search", "cv"}
# options of eval.py's config, not of training's: tests/test_eval.py
OTHER_COMMANDS_OPTIONS = {"callbacks": {"evaluation"}}


def config_groups() -> dict[str, list[str]]:
    groups = {}
    for folder in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir()):
        options = sorted(f.stem for f in folder.glob("*.yaml")
                         if f.stem not in OTHER_COMMANDS_OPTIONS.get(folder.name, ()))
        if folder.name not in SKIPPED_GROUPS and options:
            groups[folder.name] = options
    return groups


def all_pairs(groups: dict[str, list[str]]) -> list[dict[str, str]]:
    """A small set of combinations in which every pair of options of two groups occurs."""
    names = list(groups)
    uncovered = {
        (a, x, b, y)
        for a, b in itertools.combinations(names, 2)
        for x in groups[a]
        for y in groups[b]
    }
    combinations = []
    while uncovered:
        a, x, b, y = min(uncovered)
        chosen = {a: x, b: y}
        for name in names:
            if name in chosen:
                continue
            chosen[name] = max(
                groups[name],
                key=lambda option: sum(
                    (n, chosen[n], name, option) in uncovered or (name, option, n, chosen[n]) in uncovered
                    for n in chosen
                ),
            )
        combinations.append(chosen)
        uncovered -= {
            (p, chosen[p], q, chosen[q]) for p, q in itertools.combinations(names, 2)
        }
    return combinations


GROUPS = config_groups()
COMBINATIONS = all_pairs(GROUPS)


def test_the_groups_the_issue_asks_for_exist():
    expected = {"data", "model", "optimizer", "loss", "augment", "trainer", "callbacks", "logger"}
    assert expected <= set(GROUPS)
    assert {"inception_v3", "xception", "vgg16"} <= set(GROUPS["model"])
    assert {"adam", "rmsprop", "sgd"} <= set(GROUPS["optimizer"])
    assert (CONFIG_DIR / "experiment").is_dir() and (CONFIG_DIR / "hydra").is_dir()


def test_all_pairs_are_covered():
    for (a, options_a), (b, options_b) in itertools.combinations(GROUPS.items(), 2):
        for x in options_a:
            for y in options_b:
                assert any(c[a] == x and c[b] == y for c in COMBINATIONS), (a, x, b, y)


# What each option means, written out here (not read from the configs).
OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}
SCHEDULERS = {"none": None, "cosine": torch.optim.lr_scheduler.CosineAnnealingLR,
              "step": torch.optim.lr_scheduler.StepLR,
              "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau}
TIMM_NAMES = {"inception_v3": "inception_v3", "xception": "legacy_xception", "vgg16": "vgg16"}
# the Lightning loggers of each logger config, in order
LOGGERS = {"none": [], "csv": [CSVLogger], "tensorboard": [TensorBoardLogger],
           "mlflow": [MLflowRunLogger], "many": [CSVLogger, TensorBoardLogger, MLflowRunLogger]}
# the callbacks, as conf/callbacks/default.yaml lists them (any order works)
RUN_FOLDER_CALLBACKS = ["BestAndLastCheckpoint", "EpochHistory", "SplitManifest", "TestPredictions",
                        "ResultsJSON", "RunPlots", "DivergenceGuard", "EpochSeeding",
                        "TrainingConfigInCheckpoint", "FailureGallery",
                        "TestPredictions", "OperatingPointChoice"]
CLASSES = {"brain_mri": ["no", "yes"], "cardiomegaly": ["normal", "cardiomegaly"],
           "covid3": ["normal", "pneumonia", "COVID-19"], "pneumonia": ["NORMAL", "PNEUMONIA"],
           "folder": ["cat", "dog"], "demo_brain_mri": ["no", "yes"],
           "demo_cardiomegaly": ["normal", "cardiomegaly"],
           "demo_covid3": ["normal", "pneumonia", "COVID-19"],
           "demo_pneumonia": ["NORMAL", "PNEUMONIA"]}  # label order: the positive class last


class NotCheckedOnThisMachine(UserWarning):
    """A part of a combination that was not built as configured (no GPU here, or a
    combination that is refused by design and checked as such)."""


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory) -> dict[str, Path]:
    """Small folders in each real data set's layout (and one for data=folder), 8 images
    per class."""
    root = tmp_path_factory.mktemp("data")
    for i in range(8):
        write_gray(root / "brain_mri" / "yes" / f"Y{i}.jpg", 150 + i)
        write_gray(root / "brain_mri" / "no" / f"no {i}.jpg", 60 + i)
        for label in ("normal", "cardiomegaly"):
            write_gray(root / "cardiomegaly" / label / f"{label}{i}.tif", 20 * i + len(label))
        for label in ("normal", "pneumonia", "COVID-19"):
            write_gray(root / "covid3" / "CXR_ijcar_mix" / label / f"{label} ({i}).png", 9 * i + len(label))
        for label in ("cat", "dog"):
            write_gray(root / "folder" / label / f"{label}{i}.png", 100 + 9 * i + 4 * (label == "dog"))
    kaggle_tree(root / "pneumonia" / "chest_xray", {"train": (6, 6), "val": (2, 2), "test": (3, 3)},
                touch_only=False)
    return {name: root / name
            for name in ("brain_mri", "cardiomegaly", "covid3", "pneumonia", "folder")}


@pytest.mark.parametrize("choice", COMBINATIONS, ids=lambda c: ",".join(c.values()))
def test_combination_composes_and_builds(choice, tmp_path, data_roots, demo_dir):
    """What ``python train.py`` builds before fitting, for one combination of options:
    each part is the one its option names (e.g. optimizer=rmsprop gives RMSprop, loss=auto
    one sigmoid output for two classes), and the data module yields batches of the
    configured size and channels, augmented only in training. Parts this machine cannot
    build as configured are built another way and named in a warning."""
    data = choice["data"]
    overrides = [f"{group}={option}" for group, option in choice.items()]
    overrides += ["data.cache.enabled=false", "data.loader.num_workers=0"]
    if choice["logger"] in ("mlflow", "many"):  # not the default store in the working folder
        overrides.append(f"logger.mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}")
    if data.startswith("demo_"):
        overrides += TINY_DEMO
    else:  # the real data sets need data.root; the papers' splits need all their images
        overrides.append(f"data.root={data_roots[data]}")
        overrides += [] if data == "folder" else ["data.split.mode=ratios"]
    run_dir = tmp_path / "run"
    cfg = compose_config(overrides, run_dir, demo_dir=demo_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["trainer"]["batch_size"] == resolved["data"]["loader"]["batch_size"]
    not_checked = []

    # data: the classes in label order, and a training batch as the model will see it
    augment = hydra.utils.instantiate(cfg.augment) if cfg.get("augment") else None
    assert (augment is None) == (choice["augment"] == "none")
    datamodule = hydra.utils.instantiate(cfg.data, augment=augment, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    assert datamodule.batch_size == cfg.trainer.batch_size
    assert datamodule.class_names == CLASSES[data]
    assert datamodule.datasets["train"].augment is augment
    assert datamodule.datasets["val"].augment is None
    assert datamodule.datasets["test"].augment is None
    batch = next(iter(datamodule.train_dataloader()))
    side = cfg.data.image_size
    images_in_train = len(datamodule.datasets["train"])
    assert batch["image"].shape == (min(cfg.trainer.batch_size, images_in_train),
                                    datamodule.model_channels, side, side)
    assert batch["image"].dtype == torch.float32
    assert set(batch["label"].tolist()) <= set(range(len(CLASSES[data])))

    # model, loss, optimiser and scheduler
    classes = datamodule.class_names
    loss = choice["loss"]
    if loss == "bce" and len(classes) != 2:
        with pytest.raises(ConfigError, match="loss=bce needs exactly two classes but the data"):
            build_model(cfg, classes, datamodule.model_channels)
        not_checked.append("loss=bce refuses 3 classes (checked); the model was built with "
                           "loss=auto instead")
        with open_dict(cfg):
            cfg.loss.kind = loss = "auto"
    model = build_model(cfg, classes, datamodule.model_channels)
    binary = loss == "bce" or (loss == "auto" and len(classes) == 2)
    expected_loss = BinaryCrossEntropy if binary else (
        OneHotCrossEntropy if loss == "ce_onehot" else CrossEntropy)
    assert type(model.loss) is expected_loss
    assert model.backbone.pretrained_cfg["architecture"] == TIMM_NAMES[choice["model"]]
    assert model.backbone.get_classifier().out_features == (1 if binary else len(classes))
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == datamodule.model_channels
    configured = model.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    assert type(optimizer) is OPTIMIZERS[choice["optimizer"]]
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr
    expected_scheduler = SCHEDULERS[choice["scheduler"]]
    if expected_scheduler is None:
        assert not isinstance(configured, dict)
    else:
        scheduler = configured["lr_scheduler"]["scheduler"]
        assert type(scheduler) is expected_scheduler and scheduler.optimizer is optimizer
        assert configured["lr_scheduler"]["interval"] == "epoch"

    # callbacks and logger: the run folder's writers
    callbacks = build_callbacks(cfg)
    early = ["EarlyStopping"] if choice["callbacks"] == "early_stopping" else []
    assert [type(c).__name__ for c in callbacks] == RUN_FOLDER_CALLBACKS + early
    checkpoint = callbacks[0]
    assert isinstance(checkpoint, ModelCheckpoint) and checkpoint.monitor == "val/loss"
    assert checkpoint.dirpath == str(run_dir / "checkpoints")
    assert all(c.monitor == "val/loss" for c in callbacks if isinstance(c, EarlyStopping))
    logger, callbacks = with_loggers(cfg, callbacks)
    assert [type(one) for one in logger or []] == LOGGERS[choice["logger"]]
    assert all(Path(one.save_dir) == run_dir for one in logger or []
               if not isinstance(one, MLflowRunLogger))
    assert ("LearningRateMonitor" in [type(c).__name__ for c in callbacks]) == bool(logger)

    # the Trainer; without CUDA, a GPU trainer is built for the CPU instead
    wants_gpu = cfg.trainer.accelerator == "gpu"
    if wants_gpu and not torch.cuda.is_available():
        # one device, as on a one-GPU machine: only an explicit strategy=ddp gives DDP there
        with open_dict(cfg):
            cfg.trainer.accelerator, cfg.trainer.devices = "cpu", 1
        not_checked.append(f"trainer={choice['trainer']}: no CUDA device, so its Trainer was built "
                           "with accelerator=cpu devices=1; GPU selection and mixed precision "
                           "went unchecked")
    trainer = build_trainer(cfg, callbacks, logger, run_dir)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    assert all(c in trainer.callbacks for c in callbacks)
    assert trainer.loggers == (logger or [])
    assert isinstance(trainer.strategy, DDPStrategy) == (choice["trainer"] == "ddp")
    if choice["trainer"] == "ddp":
        assert trainer.world_size == cfg.trainer.devices or cfg.trainer.devices == -1
        # SyncBatchNorm runs on GPUs only: dropped (with a warning) when the trainer lands on the CPU
        expected = "TorchSyncBatchNorm" if torch.cuda.is_available() else "NoneType"
        assert type(trainer.strategy._layer_sync).__name__ == expected
    if not torch.cuda.is_available():  # auto: bfloat16 where oneDNN computes in it natively
        native = "bf16-mixed" if cpu_runs_bf16_natively() else "32-true"
        expected = native if cfg.trainer.precision == "auto" else cfg.trainer.precision
        assert isinstance(trainer.accelerator, CPUAccelerator) and trainer.precision == expected
    elif wants_gpu or cfg.trainer.accelerator == "auto":
        assert trainer.precision in ("bf16-mixed", "16-mixed")
    for reason in not_checked:
        warnings.warn(reason, NotCheckedOnThisMachine, stacklevel=1)


def test_the_readme_command_with_a_batch_size_composes(tmp_path):
    """``python train.py model=xception data=pneumonia trainer.batch_size=32``: the data
    loader takes the trainer's batch size; only data.root is left to set."""
    cfg = compose_config(["model=xception", "data=pneumonia", "trainer.batch_size=32"], tmp_path / "run")
    assert cfg.model.name == "legacy_xception" and cfg.data.name == "pneumonia"
    assert cfg.data.loader.batch_size == 32
    assert OmegaConf.is_missing(cfg.data, "root")
