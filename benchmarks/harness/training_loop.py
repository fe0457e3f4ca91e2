"""Training and inference throughput: medrepro's LightningModule + Trainer against a
hand-written PyTorch loop on the same model, data, batch size, precision and device.

Both read the same cached data module through the same kind of DataLoader (sampling
with replacement, so that every measured step has a full batch), both use channels_last
and the same optimiser and loss. Each round runs ``warmup`` steps and then times
``steps`` steps; the best round counts (the machine may be shared, and the best round is
the one least disturbed by others). On a CPU both run on one thread: OpenMP threads that
compete with other processes for the cores slow down erratically (tenfold on a shared
2-core machine), which would swamp the difference between the loops.
"""

from __future__ import annotations

import tempfile
import time

import torch
from torch.utils.data import DataLoader, RandomSampler

from benchmarks.harness.data_path import (
    compose_benchmark_config,
    medrepro_datamodule,
    use_one_core,
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


def _throughput(times: list[float], warmup: int, batch_size: int) -> float:
    measured = times[warmup - 1:]
    return (len(measured) - 1) * batch_size / (measured[-1] - measured[0])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _data(root, image_size, batch_size, cache_dir, device):
    if device == "cpu":
        use_one_core()
    datamodule = medrepro_datamodule(root, image_size, cache_dir, batch_size=batch_size)
    datamodule.build_cache(progress=False)
    return datamodule


class _BatchTimer:
    """Times the end of every batch; syncs the GPU only at the first and last timed one."""

    def __init__(self, device: str, warmup: int, total: int) -> None:
        self.device, self.warmup, self.total, self.times = device, warmup, total, []

    def tick(self) -> None:
        index = len(self.times)
        if index in (self.warmup - 1, self.total - 1):
            _sync(self.device)
        self.times.append(time.perf_counter())


def measure_lightning(root: str, model_name: str, image_size: int, batch_size: int, steps: int,
                      warmup: int, rounds: int, cache_dir: str, device: str) -> dict:
    """Images per second of ``Trainer.fit`` (training) and ``Trainer.test`` (inference)."""
    import pytorch_lightning as pl

    from medrepro.jobs.training import build_model, build_trainer

    datamodule = _data(root, image_size, batch_size, cache_dir, device)
    cfg = compose_benchmark_config(_settings(model_name, batch_size, device) + [
        "trainer.max_epochs=1", "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
        "+trainer.enable_checkpointing=false", "+trainer.enable_model_summary=false",
    ])
    model = build_model(cfg, datamodule.class_names, datamodule.channels)
    if cfg.trainer.get("compile", False):
        model.backbone.compile()
    total = warmup + steps

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.timer = _BatchTimer(device, warmup, total)

        def on_train_batch_end(self, *args, **kwargs) -> None:
            self.timer.tick()

        def on_test_batch_end(self, *args, **kwargs) -> None:
            self.timer.tick()

    train, infer = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            timer = Timer()
            trainer = build_trainer(cfg, [timer], False, folder)
            trainer.fit(model, train_dataloaders=_loader(datamodule, "train", total))
            train.append(_throughput(timer.timer.times, warmup, batch_size))
            timer = Timer()
            trainer = build_trainer(cfg, [timer], False, folder)
            trainer.test(model, dataloaders=_loader(datamodule, "test", total), verbose=False)
            infer.append(_throughput(timer.timer.times, warmup, batch_size))
    return {"loop": "lightning", "train_images_per_s": max(train), "train_rounds": train,
            "inference_images_per_s": max(infer), "inference_rounds": infer,
            "precision": str(trainer.precision)}


def measure_plain_loop(root: str, model_name: str, image_size: int, batch_size: int, steps: int,
                       warmup: int, rounds: int, cache_dir: str, device: str) -> dict:
    """The same training and inference written as a plain PyTorch loop."""
    import hydra

    from benchmarks.harness.flops import flops_per_image
    from medrepro.core.precision import resolve_precision
    from medrepro.lightning_modules.backbone import create_backbone
    from medrepro.lightning_modules.image_classifier import input_normalisation
    from medrepro.lightning_modules.losses import build_loss

    datamodule = _data(root, image_size, batch_size, cache_dir, device)
    cfg = compose_benchmark_config(_settings(model_name, batch_size, device))
    torch.backends.cudnn.benchmark = True
    precision = resolve_precision("auto", "gpu" if device == "cuda" else "cpu")
    autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    loss_function = build_loss(datamodule.num_classes)
    backbone = create_backbone(model_name, loss_function.num_outputs(datamodule.num_classes),
                               datamodule.channels).to(device, memory_format=torch.channels_last)
    mean, std = input_normalisation(backbone, datamodule.channels, None, None)
    mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=device).view(1, -1, 1, 1)
    optimizer = hydra.utils.instantiate(cfg.optimizer)(params=backbone.parameters())
    scaler = torch.amp.GradScaler(device, enabled=autocast_dtype == torch.float16)
    total = warmup + steps

    def forward(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            return backbone((images - mean) / std)

    def train_round() -> float:
        backbone.train()
        timer = _BatchTimer(device, warmup, total)
        for batch in _loader(datamodule, "train", total):
            logits = forward(batch["image"])
            loss = loss_function(logits.float(), batch["label"].to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            timer.tick()
        return _throughput(timer.times, warmup, batch_size)

    def inference_round() -> float:
        backbone.eval()
        timer = _BatchTimer(device, warmup, total)
        with torch.inference_mode():
            for batch in _loader(datamodule, "test", total):
                loss_function.probabilities(forward(batch["image"]))
                timer.tick()
        return _throughput(timer.times, warmup, batch_size)

    train, infer = [], []
    for _ in range(rounds):
        train.append(train_round())
        infer.append(inference_round())
    example = next(iter(_loader(datamodule, "train", 1)))["image"]
    flops = flops_per_image(backbone, forward, lambda logits: loss_function(
        logits.float(), torch.zeros(len(logits), dtype=torch.long, device=device)), example)
    return {"loop": "hand-written", "train_images_per_s": max(train), "train_rounds": train,
            "inference_images_per_s": max(infer), "inference_rounds": infer,
            "precision": precision, **flops}
