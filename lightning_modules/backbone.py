"""Build a timm backbone with the right head, input channels and weights, and the checks
on a model's settings that can run before anything is built (name, input size, weights
file)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from torch import nn

from medrepro.core.errors import ConfigError, UserError

WEIGHTS_FORMATS = "a medrepro .ckpt or a timm/torchvision state dict (.pth, .bin, .safetensors)"


def create_backbone(
    name: str,
    num_outputs: int,
    in_chans: int,
    pretrained: bool = False,
    weights: str | None = None,
    drop_rate: float = 0.0,
) -> nn.Module:
    """A timm model ``name`` with ``num_outputs`` logits and ``in_chans`` input channels.

    * ``pretrained=True`` downloads timm's default weights (ImageNet) through timm /
      Hugging Face Hub; offline this stops with a sentence suggesting the alternatives.
    * ``weights=FILE`` loads a local file instead: a timm or torchvision state dict
      (``.pth``/``.bin``/``.safetensors``, converted by timm's own filter for the model,
      first conv adapted to ``in_chans``, classifier re-initialised when its shape
      differs), or a medrepro Lightning checkpoint (``.ckpt``) of the same architecture.
      Either is read as data only (``weights_only=True``): a file that would run code, or
      any file that is not such weights, stops with one sentence naming it.
    """
    check_model_name(name)
    kwargs = {"num_classes": num_outputs, "in_chans": in_chans, "drop_rate": drop_rate}
    if weights:
        path = weights_file(weights)
        if path.suffix == ".ckpt":
            model = timm.create_model(name, pretrained=False, **kwargs)
            _load_lightning_checkpoint(model, path)
            return model
        return _create_from_state_dict(name, path, kwargs)
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as error:  # network, hub or cache failures all mean the same to a user
        raise UserError(
            f"Could not download the pretrained weights of '{name}' ({type(error).__name__}); "
            "run with model.pretrained=false to train from scratch, or download the weights "
            "on a connected machine and pass model.weights=FILE."
        ) from error


def check_model_name(name: str) -> None:
    """Stop with one sentence (and the closest timm names) unless timm has a model ``name``."""
    name = str(name)
    available = timm.list_models()
    if name in available or name.split(".")[0] in available:
        return
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"Unknown model name '{name}': model.name must be a timm model "
        f"(python -c \"import timm; print(timm.list_models('*{name[:5]}*'))\" lists some).{hint}"
    )


def weights_file(weights: str) -> Path:
    """``model.weights`` as a path; stop with one sentence when there is no such file."""
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"model.weights file not found: {path}; give the path of a checkpoint file.")
    return path


def check_input_size(name: str, image_size: int) -> None:
    """Stop with one sentence when the timm model ``name`` cannot take images of
    ``image_size`` x ``image_size`` pixels (a network whose feature maps shrink below its
    kernels: Inception V3 needs 75 px, VGG16 32 px), naming the smallest size it takes.

    The model is built and run on PyTorch's ``meta`` device, which computes shapes only
    (no weights are allocated, nothing is computed, no random state is used), so this costs
    a fraction of a second and runs before the data and the real model are built. A model
    that cannot be built or run there, even at its own usual size, is not checked here.
    """
    with torch.device("meta"):
        try:
            model = timm.create_model(str(name), num_classes=1, in_chans=1).eval()
        except Exception:  # noqa: BLE001  (building the real model says what is wrong)
            return
        reason = _takes(model, image_size)
        if reason is None:
            return
        usual = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        if _takes(model, usual) is not None:
            return  # the shape probe cannot tell on this model
        if image_size > usual:
            raise ConfigError(
                f"model.name={name} cannot take images of data.image_size={image_size} px "
                f"({reason}); set data.image_size={usual}, its usual size."
            )
        smallest = _smallest_size(model, image_size, usual)
    raise ConfigError(
        f"data.image_size={image_size} is too small for model.name={name}, which needs images "
        f"of at least {smallest} px; set data.image_size={smallest} or more ({usual} is its "
        "usual size)."
    )


def _takes(model: nn.Module, size: int) -> str | None:
    """``None`` when ``model`` (on the meta device) takes a ``size`` px image, else why not."""
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, size, size, device="meta"))
    except Exception as error:  # noqa: BLE001  (whatever the layers say about a small input)
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return None


def _smallest_size(model: nn.Module, too_small: int, fits: int) -> int:
    """The smallest size in ``(too_small, fits]`` the model takes (a bisection: a network
    that takes an image takes every larger one)."""
    while fits - too_small > 1:
        middle = (too_small + fits) // 2
        if _takes(model, middle) is None:
            fits = middle
        else:
            too_small = middle
    return fits


def _create_from_state_dict(name: str, path: Path, kwargs: dict) -> nn.Module:
    """timm's ``name`` with the state dict in ``path``, loaded and converted by timm."""
    try:  # timm's own reader: safetensors, or torch.load(weights_only=True)
        state = timm.models.load_state_dict(str(path))
    except Exception as error:  # anything that is not such a file: text, pickled code, ...
        raise _unreadable(path, error) from error
    if not isinstance(state, Mapping) or not state:
        raise UserError(f"model.weights: {path} holds no state dict; give {WEIGHTS_FORMATS}.")
    try:
        model = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs
        )
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as error:
        raise UserError(
            f"model.weights: {path} does not fit model.name={name} ({type(error).__name__}); "
            f"give weights saved from a {name} model, or set model.name to the model that "
            "saved them."
        ) from None
    model.pretrained_cfg.pop("state_dict", None)  # keep no second copy of the weights
    return model


def _unreadable(path: Path, error: Exception) -> UserError:
    return UserError(
        f"model.weights: {path} is not a checkpoint or state dict that loads as plain weights "
        f"({type(error).__name__}); give {WEIGHTS_FORMATS}."
    )


def _load_lightning_checkpoint(model: nn.Module, path: Path) -> None:
    # weights_only: a checkpoint someone shares is data, never code run as the user
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # text, pickled code, a truncated file, ...: all unloadable
        raise _unreadable(path, error) from error
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise UserError(f"model.weights: {path} holds no state dict; give {WEIGHTS_FORMATS}.")
    prefix = "backbone."
    backbone_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not backbone_state:
        raise UserError(f"{path} holds no medrepro model weights (no 'backbone.' keys).")
    own = model.state_dict()
    mismatched = [k for k, v in backbone_state.items() if k in own and own[k].shape != v.shape]
    for key in mismatched:  # a different head or input channels: keep those freshly initialised
        del backbone_state[key]
    missing, unexpected = model.load_state_dict(backbone_state, strict=False)
    if unexpected or set(missing) - set(mismatched):
        raise UserError(
            f"{path} was trained with another architecture than '{type(model).__name__}'; "
            "use the same model.name as the run that saved it."
        )
