"""Build a timm backbone with the right head, input channels and weights."""

from __future__ import annotations

import difflib
import pickle
from pathlib import Path

import timm
import torch
from torch import nn

from medrepro.core.errors import ConfigError, UserError


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
    """
    _check_model_name(name)
    kwargs = {"num_classes": num_outputs, "in_chans": in_chans, "drop_rate": drop_rate}
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"model.weights file not found: {path}; give the path of a checkpoint file.")
        if path.suffix == ".ckpt":
            model = timm.create_model(name, pretrained=False, **kwargs)
            _load_lightning_checkpoint(model, path)
            return model
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
        )
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


def _check_model_name(name: str) -> None:
    available = timm.list_models()
    if name in available or name.split(".")[0] in available:
        return
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"Unknown model name '{name}': model.name must be a timm model "
        f"(python -c \"import timm; print(timm.list_models('*{name[:5]}*'))\" lists some).{hint}"
    )


def _load_lightning_checkpoint(model: nn.Module, path: Path) -> None:
    # weights_only: a checkpoint someone shares is data, never code run as the user
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as error:
        raise UserError(
            f"model.weights: {path} cannot be loaded as plain weights ({type(error).__name__}); "
            "give a medrepro .ckpt or a timm/torchvision state dict (.pth, .safetensors)."
        ) from None
    state = checkpoint.get("state_dict", checkpoint)
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
