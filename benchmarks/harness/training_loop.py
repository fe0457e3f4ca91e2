"""Training and inference throughput: medrepro's LightningModule + Trainer against a
hand-written PyTorch loop on the same model, data, batch size, precision and device.

Both read the same cached data module through the same kind of DataLoader (sampling
with replacement, so that every measured step has a full batch), both use channels_last
and the same optimiser, loss and precision. Each round runs ``warmup`` steps and then times
``steps`` steps. On a CPU both run on one thread: OpenMP threads that compete with other
processes for the cores slow down erratically (tenfold on a shared 2-core machine), which
would swamp the difference between the loops.

Two measurements: each loop in its own process (:func:`measure_lightning`,
:func:`measure_plain_loop`: its own images per second and peak memory, the best of the
rounds), and both loops in one process (:func:`measure_paired`), alternating round by round
on the same model, whose median ratio is the comparison. Rounds of a few seconds
in separate processes on a shared machine differ by 10-25 % from one to the next (other
processes take turns on the cores), so the best of three per process compared the
machine's quiet moments more than the loops; adjacent rounds in one process see the same
machine.
"""

from __future__ import annotations

import statistics
import tempfile

import torch
from torch.utils.data import DataLoader, RandomSampler

from benchmarks.harness.data_path import (
    compose_benchmark_config,
    medrepro_datamodule,
    use_one_core,
)
from benchmarks.harness.timing import (
    INFERENCE_STEPS_PER_TRAINING_STEP,
    images_per_second,
    summary,
    tick,
)


def _settings(model_name: str, batch_size: int, device: str) -> list[str]:
    return [f"model.name={model_name}", f"trainer.batch_size={batch_size}",
            f"trainer={'gpu' if device == 'cuda' else 'cpu'}", "logger=none"]


def _loader(datamodule, split: str, batches: int) -> DataLoader:
    dataset = datamodule.datasets[split]
    loader = datamodule.loader
    sampler = RandomSampler(dataset, replacement=True, num_samples=batches * loader.batch_size,
                            generator=torch.Generator().manual_seed(0))
    return DataLoader(dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      persistent_workers=loader.persistent_workers)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _data(root, image_size, batch_size, cache_dir, device, threads=1):
    if device == "cpu":
        use_one_core()
        torch.set_num_threads(threads)
    datamodule = medrepro_datamodule(root, image_size, cache_dir, batch_size=batch_size)
    datamodule.build_cache(progress=False)
    return datamodule


class _BatchTimer:
    """Times the end of every batch (wall clock and CPU time); syncs the GPU only at the
    first and last timed one."""

    def __init__(self, device: str, warmup: int, total: int) -> None:
        self.device, self.warmup, self.total, self.times = device, warmup, total, []

    def tick(self) -> None:
        index = len(self.times)
        if index in (self.warmup - 1, self.total - 1):
            _sync(self.device)
        self.times.append(tick())


def _precision(precision: str, device: str) -> str:
    from medrepro.core.precision import resolve_precision

    return str(resolve_precision(precision, "gpu" if device == "cuda" else "cpu"))


class LightningLoop:
    """medrepro's loop: ``Trainer.fit`` (training) and ``Trainer.test`` (inference) of the
    LightningModule a run builds, with ``trainer.precision=precision``."""

    name = "lightning"

    def __init__(self, datamodule, model_name: str, batch_size: int, steps: int, warmup: int,
                 device: str, precision: str, folder: str) -> None:
        from medrepro.jobs.training import build_model

        self.cfg = compose_benchmark_config(_settings(model_name, batch_size, device) + [
            f"trainer.precision={precision}",
            "trainer.max_epochs=1", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
            "+trainer.enable_checkpointing=false", "+trainer.enable_model_summary=false",
        ])
        self.model = build_model(self.cfg, datamodule.class_names, datamodule.channels)
        if self.cfg.trainer.get("compile", False):
            self.model.backbone.compile()
        self.datamodule, self.device, self.folder = datamodule, device, folder
        self.batch_size, self.warmup, self.steps = batch_size, warmup, steps
        self.precision = _precision(precision, device)

    def _run(self, stage: str) -> tuple[float, float]:
        import pytorch_lightning as pl

        from medrepro.jobs.training import build_trainer

        total = self.warmup + self.steps * (1 if stage == "fit" else
                                            INFERENCE_STEPS_PER_TRAINING_STEP)
        timer = _BatchTimer(self.device, self.warmup, total)

        class Timer(pl.Callback):
            def on_train_batch_end(self, *args, **kwargs) -> None:
                timer.tick()

            def on_test_batch_end(self, *args, **kwargs) -> None:
                timer.tick()

        trainer = build_trainer(self.cfg, [Timer()], False, self.folder)
        loader = _loader(self.datamodule, "train" if stage == "fit" else "test", total)
        if stage == "fit":
            trainer.fit(self.model, train_dataloaders=loader)
        else:
            trainer.test(self.model, dataloaders=loader, verbose=False)
        self.precision = str(trainer.precision)
        return images_per_second(timer.times, self.warmup, self.batch_size)

    def train_round(self) -> tuple[float, float]:
        return self._run("fit")

    def inference_round(self) -> tuple[float, float]:
        return self._run("test")


class PlainLoop:
    """The same training and inference written as a plain PyTorch loop."""

    name = "hand-written"

    def __init__(self, datamodule, model_name: str, batch_size: int, steps: int, warmup: int,
                 device: str, precision: str, backbone: torch.nn.Module | None = None) -> None:
        import hydra

        from medrepro.lightning_modules.backbone import create_backbone
        from medrepro.lightning_modules.image_classifier import input_normalisation
        from medrepro.lightning_modules.losses import build_loss

        cfg = compose_benchmark_config(_settings(model_name, batch_size, device))
        torch.backends.cudnn.benchmark = True
        self.precision = _precision(precision, device)
        self.autocast_dtype = {"bf16-mixed": torch.bfloat16,
                               "16-mixed": torch.float16}.get(self.precision)
        self.loss_function = build_loss(datamodule.num_classes)
        self.backbone = backbone or create_backbone(
            model_name, self.loss_function.num_outputs(datamodule.num_classes),
            datamodule.channels).to(device, memory_format=torch.channels_last)
        mean, std = input_normalisation(self.backbone, datamodule.channels, None, None)
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)
        self.optimizer = hydra.utils.instantiate(cfg.optimizer)(params=self.backbone.parameters())
        self.scaler = torch.amp.GradScaler(device, enabled=self.autocast_dtype == torch.float16)
        self.datamodule, self.device = datamodule, device
        self.batch_size, self.warmup, self.total = batch_size, warmup, warmup + steps
        self.inference_total = warmup + steps * INFERENCE_STEPS_PER_TRAINING_STEP

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True).contiguous(
            memory_format=torch.channels_last)
        with torch.autocast(self.device, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            return self.backbone((images - self.mean) / self.std)

    def train_round(self) -> tuple[float, float]:
        self.backbone.train()
        timer = _BatchTimer(self.device, self.warmup, self.total)
        for batch in _loader(self.datamodule, "train", self.total):
            logits = self.forward(batch["image"])
            loss = self.loss_function(logits.float(),
                                      batch["label"].to(self.device, non_blocking=True))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            timer.tick()
        return images_per_second(timer.times, self.warmup, self.batch_size)

    def inference_round(self) -> tuple[float, float]:
        self.backbone.eval()
        timer = _BatchTimer(self.device, self.warmup, self.inference_total)
        with torch.inference_mode():
            for batch in _loader(self.datamodule, "test", self.inference_total):
                self.loss_function.probabilities(self.forward(batch["image"]))
                timer.tick()
        return images_per_second(timer.times, self.warmup, self.batch_size)

    def flops(self) -> dict:
        from benchmarks.harness.flops import flops_per_image

        example = next(iter(_loader(self.datamodule, "train", 1)))["image"]
        return flops_per_image(self.backbone, self.forward, lambda logits: self.loss_function(
            logits.float(), torch.zeros(len(logits), dtype=torch.long, device=self.device)),
            example)


def measure_lightning(root: str, model_name: str, image_size: int, batch_size: int, steps: int,
                      warmup: int, rounds: int, cache_dir: str, device: str,
                      precision: str = "auto", threads: int = 1) -> dict:
    """Images per second of medrepro's loop (:class:`LightningLoop`), with
    ``trainer.precision=precision`` (``auto``: what a run gets) and ``threads`` CPU threads."""
    datamodule = _data(root, image_size, batch_size, cache_dir, device, threads)
    train, infer = [], []
    with tempfile.TemporaryDirectory() as folder:
        loop = LightningLoop(datamodule, model_name, batch_size, steps, warmup, device,
                             precision, folder)
        for _ in range(rounds):
            train.append(loop.train_round())
            infer.append(loop.inference_round())
    return {"loop": "lightning", **summary("train", train), **summary("inference", infer),
            "precision": loop.precision, "threads": torch.get_num_threads(),
            "parameters": sum(p.numel() for p in loop.model.backbone.parameters())}


def measure_plain_loop(root: str, model_name: str, image_size: int, batch_size: int, steps: int,
                       warmup: int, rounds: int, cache_dir: str, device: str,
                       precision: str = "auto") -> dict:
    """Images per second of the hand-written loop (:class:`PlainLoop`) and the model's FLOPs."""
    datamodule = _data(root, image_size, batch_size, cache_dir, device)
    loop = PlainLoop(datamodule, model_name, batch_size, steps, warmup, device, precision)
    train, infer = [], []
    for _ in range(rounds):
        train.append(loop.train_round())
        infer.append(loop.inference_round())
    return {"loop": "hand-written", **summary("train", train), **summary("inference", infer),
            "precision": loop.precision, **loop.flops()}


def measure_paired(root: str, model_name: str, image_size: int, batch_size: int, steps: int,
                   warmup: int, rounds: int, cache_dir: str, device: str,
                   precision: str = "auto") -> dict:
    """Both loops in this process on the same model (the hand-written loop trains medrepro's
    LightningModule's backbone with an optimizer of its own: the same tensors, so that only
    the loops differ), alternating: every round trains with both (in turns: the hand-written
    loop first in even rounds, medrepro's in odd ones), then infers with both. Returns every
    round's ratio medrepro / hand-written (wall clock and CPU time) and their medians."""
    datamodule = _data(root, image_size, batch_size, cache_dir, device)
    ratios: dict[str, list[tuple[float, float]]] = {"train": [], "inference": []}
    with tempfile.TemporaryDirectory() as folder:
        lightning = LightningLoop(datamodule, model_name, batch_size, steps, warmup, device,
                                  precision, folder)
        plain = PlainLoop(datamodule, model_name, batch_size, steps, warmup, device, precision,
                          backbone=lightning.model.backbone)
        for number in range(rounds):
            order = (plain, lightning) if number % 2 == 0 else (lightning, plain)
            for kind in ("train", "inference"):
                figures = {loop.name: getattr(loop, f"{kind}_round")() for loop in order}
                ours, theirs = figures["lightning"], figures["hand-written"]
                ratios[kind].append((ours[0] / theirs[0], ours[1] / theirs[1]))
    result = {"precision": lightning.precision, "rounds": rounds}
    for kind, values in ratios.items():
        result[f"{kind}_ratios"] = [wall for wall, _ in values]
        result[f"{kind}_cpu_ratios"] = [cpu for _, cpu in values]
        result[f"{kind}_ratio"] = statistics.median(result[f"{kind}_ratios"])
        result[f"{kind}_cpu_ratio"] = statistics.median(result[f"{kind}_cpu_ratios"])
    return result
