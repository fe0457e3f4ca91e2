"""``export.py``: a trained model as one file that runs without medrepro (ONNX, or
TorchScript), and ``model.json``, the card that says what it expects and returns.

The exported graph takes the ``[0, 1]`` image (``float32``, NCHW, the training's size and
channels) and returns class probabilities ``[N, C]``: it includes the normalisation, the
network, the calibration temperature the training fitted (logits / T; 1 when none) and the
output activation (sigmoid as ``(1 - p, p)`` for a one-logit binary model, softmax
otherwise), exactly as :meth:`ImageClassifier.predict_probabilities`. What training
did *before* the model (reading the file, resizing, cropping, the ENH enhancement) is not
in the graph: ``model.json`` describes it, step by step, so that the user applies the same.

ONNX is written by ``torch.onnx.export(dynamo=True)`` (the ``torch.export`` based exporter,
torch's default since 2.9; the TorchScript based one, ``dynamo=False``, is deprecated and
warns that it will be removed). TorchScript (``torch.jit.trace``) still works in torch 2.14
but is deprecated there too; the card says so.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from contextlib import contextmanager
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from medrepro.core.errors import ConfigError, UserError
from medrepro.core.quiet import FILE_ONLY
from medrepro.datamodules.transforms.local_phase import EnhParams
from medrepro.jobs.trained_model import TrainedModel, load_trained_model

log = logging.getLogger(__name__)

# format -> the file it writes
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
CARD_FILE = "model.json"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
# the oldest opset the torch.export based exporter writes natively
MIN_OPSET = 18
DEFAULT_OPSET = 18
# largest |exported - PyTorch| probability the check after export accepts
CHECK_TOLERANCE = 1e-4
# random images the check runs (not the export's example batch of 2: the batch size is free)
CHECK_BATCH = 3
# the ONNX exporter's libraries log each optimisation pass at INFO
EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")
# an ONNX file holds at most 2 GB; larger weights go into model.onnx.data beside it
EXTERNAL_DATA_BYTES = 1_500_000_000
# cv2 interpolation flags as albumentations' Resize takes them
INTERPOLATIONS = {0: "cv2.INTER_NEAREST", 1: "cv2.INTER_LINEAR", 2: "cv2.INTER_CUBIC",
                  3: "cv2.INTER_AREA", 4: "cv2.INTER_LANCZOS4"}
TORCHSCRIPT_NOTE = ("TorchScript is deprecated in torch 2.14 (torch.jit.trace, save and load "
                    "warn so); the file loads with torch.jit.load today, but prefer the ONNX "
                    "export (format=onnx) for anything that must keep working.")


class ProbabilityModel(nn.Module):
    """``[N, C, H, W]`` images in ``[0, 1]`` -> ``[N, classes]`` probabilities: the trained
    classifier's normalisation, backbone and output activation, without the
    LightningModule around them (its metrics and trainer hooks are not part of the model,
    and ``torch.jit.trace`` cannot walk a LightningModule that has no Trainer)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone = classifier.backbone
        self.register_buffer("mean", classifier.mean.detach().clone())
        self.register_buffer("std", classifier.std.detach().clone())
        self.activation = classifier.loss  # its probabilities(): the loss's own activation
        # the calibration temperature the training fitted (1: none), as ImageClassifier.probabilities
        self.register_buffer("temperature", torch.tensor(float(classifier.temperature)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # as ImageClassifier.forward: channels_last, then the normalisation
        images = images.contiguous(memory_format=torch.channels_last)
        logits = self.backbone((images - self.mean) / self.std)
        return self.activation.probabilities(logits.float() / self.temperature)


def check_format(format: str) -> str:
    if format not in MODEL_FILES:
        raise ConfigError(f"format={format} is not a format export writes; use "
                          f"{' or '.join(f'format={name}' for name in MODEL_FILES)}.")
    return format


def onnx_module():
    """``onnx``, after checking that the exporter's packages are installed."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) needs it)
    except ImportError as error:
        raise UserError(f"format=onnx needs the packages onnx and onnxscript ({error.name} is "
                        "not installed): pip install onnx onnxscript.") from None
    return onnx


def check_opset(opset) -> int:
    highest = onnx_module().defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= highest:
        raise ConfigError(f"opset must be a whole number from {MIN_OPSET} to {highest} (the "
                          f"ONNX opsets this exporter writes), not {opset}.")
    return opset


def export_model(trained: TrainedModel, output_dir: str | Path, format: str = "onnx",
                 opset: int = DEFAULT_OPSET, check: bool = True) -> dict:
    """Write ``model.onnx`` (or ``model.pt``) and ``model.json`` into ``output_dir``;
    return the card (``model.json``'s content). ``check``: run the written file on random
    images and compare with PyTorch (``check`` in the card; a difference above
    :data:`CHECK_TOLERANCE` stops with a :class:`UserError` after the files are written)."""
    check_format(format)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = ProbabilityModel(trained.classifier).float().eval()
    example = torch.rand(2, trained.model_channels, trained.image_size, trained.image_size,
                         generator=torch.Generator().manual_seed(0))
    model_path = output_dir / MODEL_FILES[format]
    if format == "onnx":
        details = _export_onnx(model, example, model_path, check_opset(opset))
    else:
        details = _export_torchscript(model, example, model_path)
    outcome = _check(trained, model_path, format) if check else {"skipped": "check=false"}
    card = model_card(trained, format, model_path, details, outcome)
    (output_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    if outcome.get("passed") is False:
        raise UserError(
            f"The exported {model_path.name} gives probabilities up to "
            f"{outcome['max_abs_difference']:.2g} away from PyTorch's (more than "
            f"{CHECK_TOLERANCE:g}) on random images; do not use it, and report this with "
            f"{CARD_FILE} (export with format=torchscript, or another opset, may work).")
    return card


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> dict:
    onnx = onnx_module()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = weight_bytes > EXTERNAL_DATA_BYTES
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), _quiet_loggers(EXPORTER_LOGGERS):
        warnings.simplefilter("ignore")  # torch.export's notes on the tracing itself
        program = torch.onnx.export(
            model, (example,), dynamo=True, verbose=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: batch}},
        )
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    program.save(str(path), external_data=external)
    onnx.checker.check_model(str(path), full_check=True)
    written = onnx.load(str(path), load_external_data=False)
    opsets = {entry.domain or "ai.onnx": entry.version for entry in written.opset_import}
    files = [path.name] + ([path.name + ".data"] if external else [])
    return {"files": files, "opset": opsets.get("ai.onnx", opset),
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
            "versions": {"onnx": metadata.version("onnx"),
                         "onnxscript": metadata.version("onnxscript")}}


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.jit.trace is deprecated": in the card's note
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path))
    return {"files": [path.name], "exporter": f"torch.jit.trace, torch {torch.__version__}",
            "note": TORCHSCRIPT_NOTE}


@contextmanager
def _quiet_loggers(names: tuple[str, ...]):
    """Only warnings and errors from the loggers ``names`` while inside."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def run_exported(path: Path, format: str, images: torch.Tensor):
    """The written model's probabilities for ``images`` (numpy), with the runtime a user
    would take: onnxruntime (``None`` when not installed) or ``torch.jit.load``."""
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return loaded(images).numpy()
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0]


def _check(trained: TrainedModel, path: Path, format: str) -> dict:
    """The written file, run as a user would, against PyTorch on random images (another
    batch size than the export's example: the batch dimension is free)."""
    images = torch.rand(CHECK_BATCH, trained.model_channels, trained.image_size,
                        trained.image_size, generator=torch.Generator().manual_seed(1))
    exported = run_exported(path, format, images)
    runtime = ("onnxruntime " + _version("onnxruntime")) if format == "onnx" else "torch.jit.load"
    if exported is None:  # the command's last line says so
        return {"skipped": "onnxruntime is not installed (pip install onnxruntime)"}
    with torch.no_grad():
        expected = trained.classifier.predict_probabilities(images).numpy()
    difference = float(abs(exported - expected).max())
    return {"runtime": runtime, "random_images": CHECK_BATCH, "max_abs_difference": difference,
            "tolerance": CHECK_TOLERANCE, "passed": difference <= CHECK_TOLERANCE}


def model_card(trained: TrainedModel, format: str, model_path: Path, details: dict,
               check: dict) -> dict:
    """``model.json``: what the exported model expects and returns, and where it came from."""
    classes = trained.class_names
    binary = len(classes) == 2
    size, channels = trained.image_size, trained.model_channels
    mean = trained.classifier.mean.flatten().tolist()
    std = trained.classifier.std.flatten().tolist()
    card = {
        "format": format,
        "file": model_path.name,
        "files": details["files"],
        "input": {
            "name": INPUT_NAME, "dtype": "float32", "layout": "NCHW",
            "shape": ["batch", channels, size, size], "height": size, "width": size,
            "channels": channels, "value_range": [0.0, 1.0],
            "meaning": "the pre-processed image (see preprocessing), NOT normalised: the "
                       "model normalises it itself",
        },
        "output": {
            "name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", len(classes)],
            "meaning": "class probabilities, one column per class in class_names order "
                       "(each row sums to 1)",
        },
        "class_names": classes,
        "positive_class": classes[1] if binary else None,
        "threshold": trained.threshold if binary else None,
        "operating_point": trained.operating_point,
        "temperature": trained.temperature,
        "decision": (f"{classes[1]} when probabilities[:, 1] >= {trained.threshold:g}, else "
                     f"{classes[0]}" if binary else "the class of the largest probability"),
        "preprocessing": preprocessing_card(trained),
        "normalisation": {
            "inside_model": True, "mean": mean, "std": std,
            "formula": "(image - mean) / std per channel, applied by the model: do not "
                       "apply it again",
        },
        "source": {
            "checkpoint": str(trained.checkpoint.resolve()),
            "training_run": str(trained.run_dir) if trained.run_dir else None,
            "epoch": trained.epoch,
            "model": (trained.config.get("model") or {}).get("name"),
            "trained_on": trained.data_config.get("name"),
        },
        "exporter": details["exporter"],
        "versions": {"medrepro": _version("medrepro"), "torch": torch.__version__,
                     **details.get("versions", {})},
        "check": check,
    }
    if "opset" in details:
        card["opset"] = details["opset"]
    if "note" in details:
        card["note"] = details["note"]
    return card


def preprocessing_card(trained: TrainedModel) -> dict:
    """What training did to each file before the model saw it, in the order it did it."""
    preprocess = trained.preprocessing().get("preprocess") or {}
    steps = [dict(step) for step in preprocess.get("steps") or []]
    enhance = preprocess.get("enhance", "none")
    read_as = "grayscale" if trained.channels == 1 else "RGB"
    reading = (f"read the file as {read_as} ({trained.channels} channel"
               f"{'s' if trained.channels != 1 else ''}; colour to gray by ITU-R BT.601 "
               "luma, gray to RGB by repeating it) and scale it to float32 in [0, 1] "
               "(8-bit / 255, 16-bit / 65535), as medrepro.datamodules.transforms."
               "image_reader.read_image")
    described = [reading, *(_describe_step(step) for step in steps)]
    card = {"channels_read": trained.channels, "steps": steps, "enhance": enhance}
    if enhance == "enh":
        overrides = {k: v for k, v in (preprocess.get("enh") or {}).items() if v is not None}
        parameters = {**asdict(EnhParams()), **overrides}
        card["enh"] = parameters
        described.append(
            "compute the local-phase enhancement (ENH: channels LwPA, LPE, ELEA, each in "
            "[0, 1]) from the resized grayscale image with these enh parameters, as "
            "medrepro.datamodules.transforms.enhancement.LocalPhaseEnhancement")
    described.append(f"arrange as float32 [N, {trained.model_channels}, {trained.image_size}, "
                     f"{trained.image_size}] (channels first) in [0, 1]")
    card["describe"] = described
    card["in_python"] = ("with medrepro installed: medrepro.datamodules.image_dataset."
                         "preprocess_image(path, channels_read, pipeline) where pipeline = "
                         "medrepro.jobs.trained_model.load_trained_model(checkpoint).pipeline()")
    return card


def _describe_step(step: dict) -> str:
    target = str(step.get("_target_", "?"))
    options = {k: v for k, v in step.items() if k != "_target_"}
    if target.endswith("albumentations.Resize"):
        flag = int(options.get("interpolation", 1))
        name = INTERPOLATIONS.get(flag, f"cv2 interpolation {flag}")
        return (f"resize to {options.get('height')} x {options.get('width')} (height x width) "
                f"with {name} (cv2.resize on the float image, as albumentations.Resize)")
    if target.endswith("CropToBrain"):
        return ("crop to the head (threshold, largest contour, extreme points) as "
                f"medrepro.datamodules.transforms.brain_crop.CropToBrain({_arguments(options)})")
    return f"{target}({_arguments(options)})"


def _arguments(options: dict) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in options.items())


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def export(cfg: DictConfig) -> dict:
    """``python export.py``: check the settings, load the checkpoint, export, say where."""
    format = check_format(str(cfg.format))
    if format == "onnx":
        check_opset(cfg.get("opset", DEFAULT_OPSET))
    trained = load_trained_model(cfg.get("ckpt_path"), setting="ckpt_path")
    output_dir = Path(str(cfg.output_dir))
    card = export_model(trained, output_dir, format, opset=cfg.get("opset", DEFAULT_OPSET),
                        check=bool(cfg.get("check", True)))
    check = card["check"]
    if "max_abs_difference" in check:
        checked = (f"checked with {check['runtime']}: largest probability difference from "
                   f"PyTorch {check['max_abs_difference']:.1e} on {check['random_images']} "
                   "random images")
    else:
        checked = f"not checked: {check['skipped']}"
    lines = [(f"Exported {trained.checkpoint} as {format}: {output_dir / card['file']} and "
             f"{output_dir / CARD_FILE} ({checked}).")]
    if format == "torchscript":
        lines.append(f"Note: {TORCHSCRIPT_NOTE}")
    for line in lines:
        print(line)
        log.info("%s", line, extra={FILE_ONLY: True})  # the run folder's export.log
    return card


def run_export(cfg: DictConfig) -> dict | None:
    """:func:`export`, with a user's mistake printed as one sentence (exit status 1)."""
    try:
        return export(cfg)
    except UserError as error:
        log.error("%s", error, extra={FILE_ONLY: True})  # printed below
        print(f"\nError: {error}", file=sys.stderr)
        raise SystemExit(1) from None


