"""Grad-CAM (lightning_modules/saliency.py) and its overlay on the original image
(medrepro/core/saliency_overlay.py): the target layer of each model family, the heat map
against a plain-autograd Grad-CAM and against a model whose output depends on one region
only, and the overlay at the original's own resolution."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

from medrepro.core.errors import ConfigError
from medrepro.core.saliency_overlay import (
    cam_on_original,
    cam_peak,
    overlay_on_original,
    save_png,
)
from medrepro.lightning_modules.image_classifier import ImageClassifier
from medrepro.lightning_modules.losses import BinaryCrossEntropy, CrossEntropy
from medrepro.lightning_modules.saliency import grad_cam_maps, target_layer_name


def meta_model(name: str) -> nn.Module:
    """timm's ``name`` (no weights: built on the meta device, shapes only)."""
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=1, in_chans=1).eval()


def output_shapes(model: nn.Module, size: int) -> list[tuple[str, tuple[int, ...]]]:
    """(module name, output shape) in the order the modules finish on a ``size`` px image."""
    finished, handles = [], []
    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(
                lambda m, i, o, name=name: finished.append((name, tuple(o.shape)))))
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size, device="meta"))
    for handle in handles:
        handle.remove()
    return finished


@pytest.mark.parametrize("name, size, expected, channels, stride", [
    ("inception_v3", 299, "Mixed_7c", 2048, 37),  # 8 x 8 maps at 299 px
    ("legacy_xception", 299, "act4", 2048, 29),  # 10 x 10
    ("vgg16", 64, "features.29", 512, 16),
    ("vgg16_bn", 64, "features.42", 512, 16),
    ("resnet18", 64, "layer4", 512, 32),
    ("resnet50", 64, "layer4", 2048, 32),
    ("test_resnet", 64, "layer4", 96, 32),
])
def test_each_family_takes_its_last_convolutional_feature_maps(name, size, expected, channels, stride):
    model = meta_model(name)
    layer = target_layer_name(name, model)
    assert layer == expected
    shapes = output_shapes(model, size)
    names = [n for n, _ in shapes]
    shape = dict(shapes)[layer]
    assert shape[:2] == (1, channels) and shape[2] == shape[3] == size // stride
    later = shapes[names.index(layer) + 1:]
    if name.startswith("vgg"):
        # the last ReLU of `features`, right before its final max-pool (not the pooled maps)
        assert isinstance(model.get_submodule(layer), nn.ReLU)
        assert later[0][0] == f"features.{len(model.features) - 1}"
        assert isinstance(model.get_submodule(later[0][0]), nn.MaxPool2d)
    else:  # nothing after it keeps a spatial map: only the global pooling and the head
        assert not [n for n, s in later if len(s) == 4 and s[2] * s[3] > 1]


@pytest.mark.parametrize("name, expected", [
    ("efficientnet_b0", "blocks.6"),  # timm's feature_info[-1]
    ("convnext_atto", "stages.3"),
    ("test_vit", "blocks.5.norm1"),  # tokens: the last block's input (a class-token head)
])
def test_other_timm_models_default_to_their_last_feature_map(name, expected):
    assert target_layer_name(name, meta_model(name)) == expected


def test_a_vision_transformers_tokens_give_a_map_on_the_patch_grid():
    """Its last block reaches the class-token head through the class token alone: the
    default (that block's input) has evidence on the patches, laid out 10 x 10 here."""
    model = classifier("test_vit", ["no", "yes"], BinaryCrossEntropy()).eval()
    images = torch.rand(2, 1, 160, 160, generator=torch.Generator().manual_seed(0))
    maps = grad_cam_maps(model, images, [1, 0])
    assert maps.shape == (2, 160, 160) and (maps.max(axis=(1, 2)) > 0.99).all()


def test_a_model_without_feature_info_takes_the_activation_after_its_last_convolution():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8),
                          nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))
    assert target_layer_name("mine", model) == "4"


def test_a_given_name_overrides_and_a_wrong_one_stops_with_one_sentence():
    model = meta_model("test_resnet")
    assert target_layer_name("test_resnet", model, "layer3") == "layer3"
    assert target_layer_name("test_resnet", model, "backbone.layer2.0") == "layer2.0"
    with pytest.raises(ConfigError) as wrong:
        target_layer_name("test_resnet", model, "layer5")
    sentence = str(wrong.value)
    assert "'layer5'" in sentence and "layer4" in sentence and "test_resnet" in sentence
    assert "\n" not in sentence and ". " not in sentence and sentence.endswith(".")
    with pytest.raises(ConfigError, match="layer3.0.conv"):
        target_layer_name("test_resnet", model, "layr3.0.conv1")


def reference_grad_cam(classifier, images, classes, layer_name) -> np.ndarray:
    """Grad-CAM written out with plain autograd (Selvaraju et al. 2017): channel weights =
    spatial mean of d score / d activations; map = ReLU(weighted sum), scaled to [0, 1] and
    resized bilinearly to the input. Score: the class's logit; one logit (BCE): the logit
    for class 1, minus it for class 0."""
    classifier.eval()
    layer = classifier.backbone.get_submodule(layer_name)
    kept = {}
    handle = layer.register_forward_hook(lambda m, i, o: kept.setdefault("maps", o))
    logits = classifier(images.clone())
    handle.remove()
    classes = torch.tensor(classes)
    if logits.shape[1] == 1:
        score = logits[:, 0] * torch.where(classes == 1, 1.0, -1.0)
    else:
        score = logits[torch.arange(len(classes)), classes]
    (grads,) = torch.autograd.grad(score.sum(), kept["maps"])
    weights = grads.mean(dim=(2, 3), keepdim=True)
    maps = torch.relu((weights * kept["maps"]).sum(1)).detach().numpy()
    height, width = images.shape[2:]
    out = []
    for cam in maps:
        cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
        out.append((cam - cam.min()) / (cam.max() - cam.min() + 1e-7))
    return np.stack(out)


def classifier(name, class_names, loss, channels=1, seed=0) -> ImageClassifier:
    torch.manual_seed(seed)
    return ImageClassifier(name, class_names, channels, loss, optimizer=None)


@pytest.mark.parametrize("classes, loss, channels", [
    (["no", "yes"], BinaryCrossEntropy(), 1),  # one logit
    (["a", "b", "c"], CrossEntropy(), 3),  # one logit per class
])
def test_maps_equal_a_plain_autograd_grad_cam_of_the_normalised_channels_last_model(classes, loss, channels):
    model = classifier("test_resnet", classes, loss, channels).eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(4, channels, 72, 104, generator=generator)  # not square
    explained = [1, 0, 1, 0] if len(classes) == 2 else [2, 0, 1, 2]
    for layer in ("layer3", None):
        maps = grad_cam_maps(model, images, explained, layer)
        assert maps.shape == (4, 72, 104) and maps.dtype == np.float32
        assert maps.min() >= 0 and maps.max() <= 1
        expected = reference_grad_cam(model, images, explained, layer or "layer4")
        np.testing.assert_allclose(maps, expected, atol=2e-3)
    other = grad_cam_maps(model, images, [0, 1, 0, 1] if len(classes) == 2 else [0, 1, 2, 0], "layer3")
    assert np.abs(other - maps).max() > 0.1  # the class explained matters
    with pytest.raises(ValueError, match="do not fit"):
        grad_cam_maps(model, images, [len(classes) + 3] * 4, "layer3")


def test_inside_inference_mode_the_model_is_left_as_it_was():
    """As in Lightning's test loop: inference mode on, input an inference tensor; the
    model's training flags, requires_grad and gradients are restored, the hooks removed."""
    model = classifier("test_resnet", ["no", "yes"], BinaryCrossEntropy()).train()
    model.backbone.layer1.eval()
    model.backbone.conv1.requires_grad_(False)
    model.backbone.fc.weight.grad = torch.full_like(model.backbone.fc.weight, 0.5)
    modes = {name: m.training for name, m in model.named_modules()}
    frozen = {name: p.requires_grad for name, p in model.named_parameters()}
    with torch.inference_mode():
        images = torch.rand(2, 1, 64, 64)
        maps = grad_cam_maps(model, images, [1, 0], "layer3")
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all() and maps.max() == pytest.approx(1, abs=1e-3)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == frozen
    assert torch.equal(model.backbone.fc.weight.grad, torch.full_like(model.backbone.fc.weight, 0.5))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "backbone.fc.weight")
    assert not any(m._forward_hooks for m in model.modules())


class RegionNet(nn.Module):
    """A network whose logit depends on one region of the image only: a bright-spot detector
    (3x3 conv, ReLU) on the masked image, averaged, one logit. Built, not trained."""

    def __init__(self, height: int, width: int, region: tuple[int, int, int, int]) -> None:
        super().__init__()
        top, bottom, left, right = region
        mask = torch.zeros(1, 1, height, width)
        mask[..., top:bottom, left:right] = 1
        self.register_buffer("mask", mask)
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 9)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 1)
        with torch.no_grad():
            self.fc.weight.fill_(1.0)
            self.fc.bias.fill_(-0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.act(self.conv(x * self.mask))).flatten(1))


def test_the_peak_falls_in_the_one_region_that_decides_the_output():
    height, width, region = 48, 80, (6, 22, 50, 74)  # upper right: not symmetric
    model = classifier("test_resnet", ["no", "yes"], BinaryCrossEntropy())
    model.backbone = RegionNet(height, width, region).to(memory_format=torch.channels_last)
    rng = np.random.default_rng(0)
    images = 0.2 + 0.1 * rng.random((3, 1, height, width), dtype=np.float32)
    spots = [(14, 60), (10, 55), (18, 70)]  # inside the region
    decoys = [(35, 12), (30, 40), (40, 20)]  # brighter and bigger, outside it
    for image, (y, x), (v, u) in zip(images, spots, decoys):
        image[0, y - 1 : y + 2, x - 1 : x + 2] = 0.9
        image[0, v - 4 : v + 5, u - 4 : u + 5] = 1.0
    images = torch.from_numpy(images)
    top, bottom, left, right = region
    for layer in (None, "act"):  # the default is the ReLU after the last convolution
        maps = grad_cam_maps(model, images, [1, 1, 1], layer)
        for cam, (y, x) in zip(maps, spots):
            peak_x, peak_y = cam_peak(cam)
            assert top <= peak_y < bottom and left <= peak_x < right
            assert abs(peak_x - x) <= 1 and abs(peak_y - y) <= 1
            assert cam[:top].max() == cam[bottom:].max() == cam[:, :left].max() == 0
    # on a twice as large original, the peak is where the spot is there
    original_peak = cam_peak(cam_on_original(maps[0], (2 * height, 2 * width)))
    assert abs(original_peak[0] - (2 * 60 + 0.5)) <= 2 and abs(original_peak[1] - (2 * 14 + 0.5)) <= 2
    # the negative class (minus the one logit) has no evidence in this network
    assert grad_cam_maps(model, images, [0, 0, 0], "act").max() == 0


def test_overlay_has_the_originals_own_shape_and_the_heat_where_the_map_is_hot():
    original = np.tile(np.linspace(0.1, 0.8, 53, dtype=np.float32), (37, 1))  # 37 x 53
    cam = np.zeros((8, 8), np.float32)
    cam[1, 6] = 1.0  # upper right
    for image in (original, original[:, :, None], np.repeat(original[:, :, None], 3, axis=2)):
        overlay = overlay_on_original(image, cam)
        assert overlay.shape == (37, 53, 3) and overlay.dtype == np.uint8
    redness = overlay[:, :, 0].astype(int) - overlay[:, :, 2]
    row, column = np.unravel_index(np.argmax(redness), redness.shape)
    assert abs(column - 42.5) <= 2 and abs(row - 6.4) <= 2  # cell (1, 6) of 8 x 8 on 37 x 53
    x, y = cam_peak(cam_on_original(cam, original.shape))
    assert abs(x - 42.5) <= 1 and abs(y - 6.4) <= 1


def test_a_box_places_the_map_on_that_part_and_leaves_the_rest_plain(tmp_path):
    original = np.random.default_rng(0).random((60, 90), dtype=np.float32)
    cam = np.zeros((16, 16), np.float32)
    cam[12, 3] = 1.0  # lower left of the box
    box = (10, 49, 30, 79)  # rows 10-49, columns 30-79 (inclusive)
    placed = cam_on_original(cam, original.shape, box)
    assert placed.shape == (60, 90) and placed[:10].max() == placed[:, :30].max() == 0
    x, y = cam_peak(placed)
    assert abs(x - (30 + 3.5 * 50 / 16 - 0.5)) <= 1.5 and abs(y - (10 + 12.5 * 40 / 16 - 0.5)) <= 1.5
    overlay = overlay_on_original(original, cam, box)
    plain = np.round(original * 255).astype(np.uint8)
    outside = np.ones(original.shape, bool)
    outside[10:50, 30:80] = False
    assert (overlay[outside] == plain[outside][:, None]).all()
    assert (overlay[~outside][:, 2] != overlay[~outside][:, 0]).mean() > 0.9  # coloured inside
    path = save_png(tmp_path / "overlay.png", overlay)
    with Image.open(path) as written:
        assert written.mode == "RGB" and np.array_equal(np.asarray(written), overlay)
