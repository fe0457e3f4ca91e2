"""Grad-CAM heat maps of an :class:`~medrepro.lightning_modules.image_classifier.ImageClassifier`
through the ``grad-cam`` package (pytorch_grad_cam), with the usual target layer of each model
family.

Target layers (the last convolutional feature maps, where Grad-CAM is usually taken):

* Inception V3: ``Mixed_7c``, the last Inception block;
* the Keras Xception port (``legacy_xception``): ``act4``, the ReLU after its last separable
  convolution;
* VGG16 / VGG16-BN: the last ReLU of ``features``, before the final max-pool (``features.29`` /
  ``features.42``: twice the resolution of the pooled maps);
* ResNets: ``layer4``;
* Vision Transformers: ``blocks.<last>.norm1`` (the tokens laid out on the patch grid);
* any other timm model: the module that timm names as its last feature map
  (``feature_info[-1]``), else the last convolution (or the activation right after it).

A module name given by the user replaces the default (``layer3`` for a finer map, say).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import (
    BinaryClassifierOutputTarget,
    ClassifierOutputTarget,
)
from timm.models.inception_v3 import InceptionV3
from timm.models.resnet import ResNet
from timm.models.vgg import VGG
from timm.models.vision_transformer import VisionTransformer
from timm.models.xception import Xception
from torch import nn

from medrepro.core.errors import ConfigError

BACKBONE_PREFIX = "backbone."
# activation modules that may follow the last convolution of a network without feature_info
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish)


def target_layer_name(model_name: str, backbone: nn.Module, name: str | None = None) -> str:
    """The name (in ``backbone.named_modules()``) of the module whose activations Grad-CAM
    weighs: ``name`` when given (a module of ``backbone``, also written with the
    ``backbone.`` prefix of the LightningModule's own names), else the default of the
    model family (module docstring). A ``name`` that names no module stops with one
    sentence listing the closest names."""
    modules = dict(backbone.named_modules())
    if name is not None:
        name = str(name).removeprefix(BACKBONE_PREFIX)
        if name and name in modules:
            return name
        raise ConfigError(_unknown_layer_sentence(name, model_name, backbone, modules))
    return _default_layer(backbone, modules)


def _default_layer(backbone: nn.Module, modules: dict[str, nn.Module]) -> str:
    if isinstance(backbone, InceptionV3):
        return "Mixed_7c"
    if isinstance(backbone, Xception):  # timm's legacy_xception, the Keras port
        return "act4"
    if isinstance(backbone, VGG):
        return _last_relu_before_final_pool(backbone)
    if isinstance(backbone, ResNet):
        return "layer4"
    if isinstance(backbone, VisionTransformer) and len(backbone.blocks):
        # the last block's output reaches a class-token head through the class token
        # alone (no gradient on the patch tokens): its input, normalised, is the usual choice
        return f"blocks.{len(backbone.blocks) - 1}.norm1"
    info = getattr(backbone, "feature_info", None)
    if info:
        last = info[-1] if isinstance(info, Sequence) else None
        module = last.get("module") if isinstance(last, dict) else None
        if module in modules:
            return module
    return _last_convolution(modules)


def _last_relu_before_final_pool(vgg: nn.Module) -> str:
    features = list(vgg.features.named_children())
    last_pool = max(i for i, (_, m) in enumerate(features) if isinstance(m, nn.MaxPool2d))
    index = max(i for i, (_, m) in enumerate(features[:last_pool]) if isinstance(m, nn.ReLU))
    return f"features.{features[index][0]}"


def _last_convolution(modules: dict[str, nn.Module]) -> str:
    names = list(modules)
    convolutions = [i for i, m in enumerate(modules.values()) if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise ConfigError(
            "The model has no convolution for Grad-CAM to default to; name the module whose "
            "feature maps it should use (e.g. callbacks.failure_gallery.target_layer)."
        )
    chosen = convolutions[-1]
    for index in range(chosen + 1, len(names)):
        module = modules[names[index]]
        if isinstance(module, _ACTIVATIONS):
            chosen = index
        elif not isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.Identity, nn.Sequential)):
            break  # something else follows: keep the convolution (or its activation)
    return names[chosen]


def _unknown_layer_sentence(name, model_name, backbone, modules) -> str:
    candidates = [n for n in modules if n]
    close = difflib.get_close_matches(name, candidates, n=4, cutoff=0.5)
    default = _default_layer(backbone, modules)
    hint = f"the closest are {', '.join(close)}" if close else f"its default is {default}"
    return (
        f"Grad-CAM target layer '{name}' is not a module of model {model_name} ({hint}; "
        "print(dict(model.backbone.named_modules()).keys()) lists them all, null takes "
        f"the default, {default})."
    )


class _LogitTarget:
    """What Grad-CAM differentiates for class ``index``: the class's logit
    (``ClassifierOutputTarget``), or, for a binary model with one logit (the positive
    class's, a BCE model), that logit for class 1 and its negative for class 0
    (``BinaryClassifierOutputTarget``)."""

    def __init__(self, index: int) -> None:
        self.index = int(index)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.shape[-1] == 1:
            if self.index not in (0, 1):
                raise IndexError(f"class {self.index} of a binary model")
            return BinaryClassifierOutputTarget(self.index)(output)
        return ClassifierOutputTarget(self.index)(output)


def grad_cam_maps(
    classifier: nn.Module,
    images: torch.Tensor,
    class_indices: Sequence[int],
    target_layer: str | None = None,
) -> np.ndarray:
    """Grad-CAM heat maps, ``float32 [B, H, W]`` in ``[0, 1]`` (each map scaled to its own
    maximum; all zero where no evidence was found), at the images' own size.

    Args:
        classifier: the ImageClassifier (normalisation included: ``images`` in [0, 1]);
            its ``backbone`` holds the target layer and ``hparams.name`` names the model.
        images: ``[B, C, H, W]`` model inputs in ``[0, 1]``.
        class_indices: the class to explain, one per image (in ``class_names`` order; for
            a binary model 1 is the positive class, 0 the negative one).
        target_layer: a module name of the backbone, or ``None`` for the family default.

    Works inside Lightning's evaluation loops (which run under ``torch.inference_mode``):
    the model's training flags, ``requires_grad`` and gradients are as before afterwards,
    and the hooks are removed.
    """
    if len(class_indices) != len(images):
        raise ValueError(f"{len(images)} images but {len(class_indices)} class indices")
    if not len(images):
        return np.zeros((0, *images.shape[2:]), np.float32)
    backbone = classifier.backbone
    model_name = getattr(classifier, "hparams", {}).get("name") or type(backbone).__name__
    name = target_layer_name(str(model_name), backbone, target_layer)
    layer = backbone.get_submodule(name)
    parameter = next(classifier.parameters())
    targets = [_LogitTarget(index) for index in class_indices]
    with torch.inference_mode(False), torch.enable_grad(), _restored_state(classifier):
        for weights in classifier.parameters():  # gradients flow to the activations only
            weights.requires_grad_(False)
        inputs = images.detach().clone().to(parameter.device, parameter.dtype)
        inputs.requires_grad_(True)
        reshape = _ActivationLayout(backbone, name, inputs.shape[-2:])
        maps = None  # GradCAM's context swallows an IndexError (a class the model lacks)
        with GradCAM(model=classifier, target_layers=[layer], reshape_transform=reshape) as cam:
            maps = cam(input_tensor=inputs, targets=targets)
    if maps is None:
        raise ValueError(f"class indices {list(class_indices)} do not fit the model's outputs")
    return np.nan_to_num(np.asarray(maps, dtype=np.float32)).clip(0, 1)


@contextmanager
def _restored_state(model: nn.Module) -> Iterator[None]:
    """Put back each module's training flag and each parameter's ``requires_grad`` and
    gradient (GradCAM switches the model to eval mode and clears its gradients)."""
    modes = {module: module.training for module in model.modules()}
    parameters = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training
        for weights, requires_grad, grad in parameters:
            weights.requires_grad_(requires_grad)
            weights.grad = grad


class _ActivationLayout:
    """Grad-CAM's ``reshape_transform``: the target layer's output as ``[B, C, h, w]``
    float32 (also the gradients).

    Convolutional feature maps pass unchanged; feature maps stored channels-last
    (``[B, h, w, C]``, e.g. Swin stages, recognised by timm's channel count) are permuted;
    a transformer's tokens ``[B, N, C]`` lose the class/register tokens and are laid out on
    the patch grid."""

    def __init__(self, backbone: nn.Module, layer: str, input_size: Sequence[int]) -> None:
        self.channels = _feature_channels(backbone, layer)
        self.prefix_tokens = int(getattr(backbone, "num_prefix_tokens", 0) or 0)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.layer = layer

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.float()  # bf16/fp16 models: numpy has no bfloat16
        if tensor.ndim == 4:
            if self.channels and tensor.shape[1] != self.channels == tensor.shape[-1]:
                return tensor.permute(0, 3, 1, 2)
            return tensor
        if tensor.ndim == 3:
            tokens = tensor[:, self.prefix_tokens:]
            rows, columns = _patch_grid(tokens.shape[1], *self.input_size)
            if rows * columns == tokens.shape[1]:
                return tokens.reshape(len(tokens), rows, columns, -1).permute(0, 3, 1, 2)
        raise ConfigError(
            f"Grad-CAM cannot lay out the output of layer {self.layer} "
            f"(shape {tuple(tensor.shape)}) as feature maps; set the target layer to a "
            "convolutional layer of the model."
        )


def _feature_channels(backbone: nn.Module, layer: str) -> int | None:
    for info in getattr(backbone, "feature_info", None) or []:
        if isinstance(info, dict) and info.get("module") == layer:
            return info.get("num_chs")
    return None


def _patch_grid(tokens: int, height: int, width: int) -> tuple[int, int]:
    """The rows x columns of ``tokens`` patches covering a height x width image."""
    rows = max(1, round(math.sqrt(tokens * height / width)))
    return rows, tokens // rows
