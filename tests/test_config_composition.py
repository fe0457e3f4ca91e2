"""Every option of every config group composes, resolves and instantiates with every
option of every other group (all pairs covered)."""

from __future__ import annotations

import itertools
from pathlib import Path

import hydra
import pytest
import torch
from conftest import CONFIG_DIR, compose_config
from omegaconf import OmegaConf

from medrepro.jobs.training import build_callbacks, build_model, build_trainer

SKIPPED_GROUPS = {"hydra", "paths", "experiment", "debug"}  # experiment, debug: tests/test_experiments.py


def config_groups() -> dict[str, list[str]]:
    groups = {}
    for folder in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir()):
        options = sorted(f.stem for f in folder.glob("*.yaml"))
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


@pytest.mark.parametrize("choice", COMBINATIONS, ids=lambda c: ",".join(c.values()))
def test_combination_composes_and_instantiates(choice, tmp_path, class_folders):
    overrides = [f"{group}={option}" for group, option in choice.items()]
    if not choice["data"].startswith("demo_"):  # real data sets need data.root
        overrides.append(f"data.root={class_folders}")
    cfg = compose_config(overrides, tmp_path / "run", demo_dir=tmp_path / "demo")
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["trainer"]["batch_size"] == resolved["data"]["loader"]["batch_size"]

    augment = hydra.utils.instantiate(cfg.augment) if cfg.get("augment") else None
    datamodule = hydra.utils.instantiate(cfg.data, augment=augment, _convert_="all")
    assert datamodule.batch_size == cfg.trainer.batch_size
    model = build_model(cfg, ["negative", "positive"], datamodule.channels)
    optimizers = model.configure_optimizers()
    optimizer = optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr
    callbacks = build_callbacks(cfg)
    assert len(callbacks) >= 6
    logger = hydra.utils.instantiate(cfg.logger) if cfg.get("logger") else False
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        return  # composes and resolves; building a GPU trainer needs a GPU
    trainer = build_trainer(cfg, callbacks, logger, Path(tmp_path / "run"))
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_the_readme_command_with_a_batch_size_composes(tmp_path):
    """``python train.py model=xception data=pneumonia trainer.batch_size=32``: the data
    loader takes the trainer's batch size; only data.root is left to set."""
    cfg = compose_config(["model=xception", "data=pneumonia", "trainer.batch_size=32"], tmp_path / "run")
    assert cfg.model.name == "legacy_xception" and cfg.data.name == "pneumonia"
    assert cfg.data.loader.batch_size == 32
    assert OmegaConf.is_missing(cfg.data, "root")
