"""DivergenceGuard, the training job's only divergence check: a NaN, infinite or exploded
(above ``max_loss``) training loss stops the fit wherever it happens, also in the very last
batch of the last epoch; so do weights that the last update made NaN (the validation loss),
a tested checkpoint whose validation loss is not finite, and NaN test probabilities, which
stop the test before any figure is drawn or results.json says ``completed``."""

from __future__ import annotations

import json
import math
import re

import hydra
import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY_RUN, compose_config
from test_experiments import multirun_mode_config
from torch.utils.data import DataLoader, TensorDataset

from medrepro.callbacks.divergence_guard import DivergenceGuard
from medrepro.core.errors import TrainingDiverged
from medrepro.jobs.job_runner import run_job
from medrepro.jobs.training import build_callbacks, build_model, build_trainer


class LinearRegression(pl.LightningModule):
    """A real (tiny) LightningModule whose training loss is NaN at one (epoch, batch), or
    whose weights become NaN after a finite loss at one (epoch, batch)."""

    def __init__(self, nan_at: tuple[int, int] | None,
                 nan_weights_at: tuple[int, int] | None = None,
                 loss_at: dict[tuple[int, int], float] | None = None, val_loss: float | None = None,
                 nan_test_batch: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.nan_at = nan_at
        self.nan_weights_at = nan_weights_at
        self.loss_at = loss_at or {}  # (epoch, batch) -> the training loss's exact value
        self.val_loss = val_loss  # the validation loss's exact value
        self.nan_test_batch = nan_test_batch
        self.validated_epochs: list[int] = []

    def training_step(self, batch, batch_idx):
        inputs, target = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs), target)
        if (self.current_epoch, batch_idx) == self.nan_at:
            loss = loss * float("nan")
        if (self.current_epoch, batch_idx) in self.loss_at:  # that value, still differentiable
            loss = loss * 0 + self.loss_at[(self.current_epoch, batch_idx)]
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if (self.current_epoch, batch_idx) == self.nan_weights_at:  # after a finite loss's update
            with torch.no_grad():
                self.layer.weight.fill_(float("nan"))

    def validation_step(self, batch, batch_idx):
        self.validated_epochs.append(self.current_epoch)
        inputs, target = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs), target)
        self.log("val/loss", loss if self.val_loss is None else loss * 0 + self.val_loss)

    def test_step(self, batch, batch_idx):
        """Two-class probabilities (sigmoid of the output), NaN in one batch if asked."""
        inputs, _ = batch
        positive = torch.sigmoid(self.layer(inputs))[:, 0]
        if batch_idx == self.nan_test_batch:
            positive = positive.clone()
            positive[1] = float("nan")  # one image of that batch
        return {"probabilities": torch.stack([1 - positive, positive], dim=1)}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(model: LinearRegression, guard: DivergenceGuard, batches: int = 3, **trainer_args) -> pl.Trainer:
    data = TensorDataset(torch.randn(batches * 4, 2), torch.randn(batches * 4, 1))
    trainer = pl.Trainer(callbacks=[guard], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         num_sanity_val_steps=0, **trainer_args)
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    return trainer


def stopped_at(error: pytest.ExceptionInfo) -> tuple[int, int]:
    found = re.search(r"by epoch (\d+), batch (\d+)[;,] .*lower optimizer\.lr\.$", str(error.value))
    assert found, str(error.value)
    return int(found.group(1)), int(found.group(2))


def test_a_finite_run_is_not_stopped():
    trainer = fit(LinearRegression(nan_at=None), DivergenceGuard(check_every_n_batches=20), max_epochs=2)
    assert trainer.current_epoch == 2 and not trainer.interrupted


def test_nan_in_the_last_batch_of_the_last_epoch_is_caught_before_validation():
    model = LinearRegression(nan_at=(1, 2))  # epoch 2 (of 2), batch 3 (of 3)
    with pytest.raises(TrainingDiverged) as error:
        fit(model, DivergenceGuard(check_every_n_batches=20), max_epochs=2)
    assert stopped_at(error) == (2, 3)
    assert 1 not in model.validated_epochs  # the diverged epoch was not validated


def test_the_flag_is_read_every_n_batches():
    with pytest.raises(TrainingDiverged) as error:
        fit(LinearRegression(nan_at=(0, 1)), DivergenceGuard(check_every_n_batches=2), batches=6, max_epochs=3)
    assert stopped_at(error) == (1, 2)  # batch 2 is the first read after the NaN


def test_an_epoch_cut_short_by_max_steps_is_still_checked():
    """max_steps ends the fit before the epoch's last batch: the flag is read at epoch end."""
    with pytest.raises(TrainingDiverged) as error:
        fit(LinearRegression(nan_at=(0, 1)), DivergenceGuard(check_every_n_batches=20), batches=6, max_steps=2)
    assert stopped_at(error) == (1, 2)


def test_weights_made_nan_by_the_last_update_are_caught_by_the_validation_loss():
    model = LinearRegression(nan_at=None, nan_weights_at=(1, 2))  # every training loss is finite
    with pytest.raises(TrainingDiverged, match=r"validation loss became NaN or infinite in epoch 2; lower"):
        fit(model, DivergenceGuard(check_every_n_batches=20), max_epochs=2)


@pytest.mark.parametrize(("lr", "max_loss", "error"), [
    # the last batch of the last epoch
    ("1e30", "1e6", "training loss became NaN or infinite by epoch 1, batch 2;"),
    # finite training losses, exploded (about 2e18) by the last batch
    ("1e10", "1e6", "by epoch 1, batch 2, more than callbacks.divergence_guard.max_loss=1e+06;"),
    # with no limit on finite losses: NaN weights after the last step, seen by the validation
    ("1e10", "null", "validation loss became NaN or infinite in epoch 1;"),
])
def test_a_job_diverging_at_its_very_end_is_recorded_as_diverged(tmp_path, demo_dir, lr, max_loss,
                                                                  error):
    run_dir = tmp_path / "run"
    cfg = multirun_mode_config(["data=demo_cardiomegaly", *TINY_RUN, "model.name=test_resnet",
                                "optimizer=sgd", f"optimizer.lr={lr}",
                                f"callbacks.divergence_guard.max_loss={max_loss}",
                                f"paths.cache_dir={tmp_path / 'cache'}"], run_dir, demo_dir)
    assert cfg.trainer.max_epochs == 1 and cfg.trainer.limit_train_batches == 2
    assert math.isnan(run_job(cfg))  # the sweep would go on (a sweeper: a failed trial)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "diverged" and error in results["error"], results.get("error")
    assert results["failed_at"] == "training"
    assert not (run_dir / "plots").exists()  # stopped before the learning curves were drawn


# ---------------------------------------------------------------- exploding losses (max_loss)


def test_a_finite_training_loss_above_max_loss_stops_the_fit_with_its_value():
    model = LinearRegression(nan_at=None, loss_at={(0, 1): 1e25})  # lr=1e12's finite 1e25
    with pytest.raises(TrainingDiverged) as error:
        fit(model, DivergenceGuard(check_every_n_batches=20), max_epochs=2)
    assert stopped_at(error) == (1, 3)  # read at the epoch's last batch
    assert "the training loss reached 1e+25 by epoch 1, batch 3, more than " \
           "callbacks.divergence_guard.max_loss=1e+06; lower optimizer.lr." in str(error.value)
    assert model.validated_epochs == []  # stopped before that epoch's validation


def test_losses_up_to_max_loss_and_any_finite_loss_without_a_limit_train_on():
    below = fit(LinearRegression(nan_at=None, loss_at={(0, 1): 9.9e5}), DivergenceGuard(),
                max_epochs=2)
    assert below.current_epoch == 2
    unlimited = fit(LinearRegression(nan_at=None, loss_at={(0, 1): 1e25}),
                    DivergenceGuard(max_loss=None), max_epochs=2)
    assert unlimited.current_epoch == 2


def test_a_nan_after_a_huge_finite_loss_is_reported_as_nan():
    """Both fall between two reads: NaN must win over the largest finite loss."""
    model = LinearRegression(nan_at=(0, 2), loss_at={(0, 0): 1e25})
    with pytest.raises(TrainingDiverged,
                       match=r"training loss became NaN or infinite by epoch 1, batch 3;"):
        fit(model, DivergenceGuard(check_every_n_batches=20), max_epochs=1)


def test_a_validation_loss_above_max_loss_stops_the_fit():
    with pytest.raises(TrainingDiverged,
                       match=r"the validation loss reached 2e\+07 in epoch 1, more than "
                             r"callbacks\.divergence_guard\.max_loss=1e\+06;"):
        fit(LinearRegression(nan_at=None, val_loss=2e7), DivergenceGuard(), max_epochs=2)


def test_a_tested_checkpoint_with_a_nan_validation_loss_is_divergence():
    """``trainer.validate`` after the fit (the tested checkpoint) is checked as well."""
    model = LinearRegression(nan_at=None)
    trainer = fit(model, DivergenceGuard(), max_epochs=1)
    with torch.no_grad():
        model.layer.bias.fill_(float("nan"))
    data = TensorDataset(torch.randn(8, 2), torch.randn(8, 1))
    with pytest.raises(TrainingDiverged,
                       match=r"the tested checkpoint's validation loss became NaN or infinite;"):
        trainer.validate(model, DataLoader(data, batch_size=4), verbose=False)


# ---------------------------------------------------------------- test probabilities


def test(model: LinearRegression, guard: DivergenceGuard, batches: int = 3) -> pl.Trainer:
    data = TensorDataset(torch.randn(batches * 4, 2), torch.randn(batches * 4, 1))
    trainer = pl.Trainer(callbacks=[guard], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.test(model, DataLoader(data, batch_size=4), verbose=False)
    return trainer


test.__test__ = False  # a helper, not a test


def test_one_nan_test_probability_in_any_batch_stops_the_test():
    test(LinearRegression(nan_at=None), DivergenceGuard())  # finite probabilities: tested
    for batch in (0, 1, 2):  # first, middle, last of 3 batches
        with pytest.raises(TrainingDiverged,
                           match=r"test probabilities are NaN or infinite, so its "
                                 r"weights are not finite numbers; lower optimizer\.lr\."):
            test(LinearRegression(nan_at=None, nan_test_batch=batch), DivergenceGuard())


@pytest.mark.parametrize("reverse", [False, True], ids=["default_order", "reversed_order"])
def test_nan_test_outputs_stop_before_any_figure_and_before_completed(tmp_path, demo_dir, reverse,
                                                                      one_torch_thread):
    """The real run-folder callbacks (conf/callbacks/default.yaml) in both orders, a real
    data module and model whose classifier weights are NaN (what lr=1e12 left): the test
    stops at its epoch's end, so no confusion matrix or ROC curve is drawn (the ROC plot used
    to fail on the NaN) and results.json never says ``completed``."""
    run_dir = tmp_path / "run"
    cfg = compose_config(["data=demo_cardiomegaly", *TINY_RUN, "model.name=test_resnet",
                          f"paths.cache_dir={tmp_path / 'cache'}"], run_dir, demo_dir)
    datamodule = hydra.utils.instantiate(cfg.data, augment=None, _convert_="all")
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = build_model(cfg, datamodule.class_names, datamodule.model_channels)
    with torch.no_grad():
        model.backbone.get_classifier().weight.fill_(float("nan"))
    callbacks = build_callbacks(cfg)
    assert any(isinstance(c, DivergenceGuard) for c in callbacks) and len(callbacks) > 3
    trainer = build_trainer(cfg, callbacks[::-1] if reverse else callbacks, False, run_dir)
    with pytest.raises(TrainingDiverged, match="test probabilities are NaN or infinite"):
        trainer.test(model, datamodule=datamodule, verbose=False)
    assert not (run_dir / "plots").exists()
    assert json.loads((run_dir / "results.json").read_text())["status"] == "running"
