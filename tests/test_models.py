"""Backbones, heads and losses: every model x channels x binary/multi-class."""

import pytest
import timm
import torch
import torchvision

from medrepro.core.errors import ConfigError, UserError
from medrepro.lightning_modules.backbone import check_input_size, create_backbone
from medrepro.lightning_modules.image_classifier import ImageClassifier
from medrepro.lightning_modules.losses import build_loss

MODELS = ["inception_v3", "legacy_xception", "vgg16"]


def classifier(name, classes, channels, loss="auto", **kwargs):
    return ImageClassifier(
        name=name,
        class_names=classes,
        in_chans=channels,
        loss=build_loss(len(classes), loss),
        optimizer=lambda params: torch.optim.Adam(params),
        **kwargs,
    )


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("classes", [["neg", "pos"], ["normal", "pneumonia", "covid"]])
def test_output_shapes_and_probabilities(name, channels, classes):
    model = classifier(name, classes, channels).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, channels, 80, 80))
        probabilities = model.predict_probabilities(torch.rand(2, channels, 80, 80))
    binary = len(classes) == 2
    assert logits.shape == (2, 1 if binary else len(classes))
    assert probabilities.shape == (2, len(classes))
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))


def test_vgg16_bn_by_model_name():
    model = classifier("vgg16_bn", ["a", "b", "c"], 1).eval()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 3)


def test_ce_on_binary_data_gives_two_softmax_outputs_and_bce_refuses_three_classes():
    model = classifier("inception_v3", ["a", "b"], 1, loss="ce").eval()
    assert model(torch.rand(2, 1, 80, 80)).shape == (2, 2)
    with pytest.raises(ConfigError, match="loss=bce needs exactly two classes"):
        build_loss(3, "bce")


def test_binary_loss_is_bce_of_the_sigmoid():
    loss = build_loss(2, "auto")
    logits = torch.tensor([[2.0], [-1.0]])
    target = torch.tensor([1, 0])
    expected = -(torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(1 - torch.sigmoid(torch.tensor(-1.0)))) / 2
    assert float(loss(logits, target)) == pytest.approx(float(expected), rel=1e-6)


def test_normalisation_follows_the_pretrained_config():
    model = classifier("vgg16", ["a", "b"], 1)
    imagenet_mean = sum(timm.data.IMAGENET_DEFAULT_MEAN) / 3
    assert float(model.mean.flatten()[0]) == pytest.approx(imagenet_mean)
    assert classifier("legacy_xception", ["a", "b"], 3).mean.flatten().tolist() == [0.5] * 3


def test_unknown_model_name_is_a_user_error():
    with pytest.raises(ConfigError, match="Did you mean inception_v3"):
        create_backbone("inceptionv3", 1, 1)


def test_any_timm_model_by_name():
    model = create_backbone("resnet18", num_outputs=3, in_chans=1)
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 3)


def test_local_timm_weights_adapt_input_channels_and_new_head(tmp_path):
    source = timm.create_model("inception_v3", pretrained=False)  # 3 channels, 1000 classes
    torch.save(source.state_dict(), tmp_path / "timm.pth")
    model = create_backbone("inception_v3", num_outputs=1, in_chans=1, weights=str(tmp_path / "timm.pth"))
    rgb_conv = source.Conv2d_1a_3x3.conv.weight
    torch.testing.assert_close(model.Conv2d_1a_3x3.conv.weight, rgb_conv.sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.Mixed_7c.branch1x1.conv.weight, source.Mixed_7c.branch1x1.conv.weight)
    assert model.fc.weight.shape == (1, 2048)


def test_torchvision_vgg16_weights_are_converted(tmp_path):
    source = torchvision.models.vgg16()
    torch.save(source.state_dict(), tmp_path / "tv_vgg16.pth")
    model = create_backbone("vgg16", num_outputs=2, in_chans=3, weights=str(tmp_path / "tv_vgg16.pth"))
    torch.testing.assert_close(model.features[28].weight, source.features[28].weight)
    # torchvision's first fully connected layer becomes timm's 7x7 convolution
    torch.testing.assert_close(model.pre_logits.fc1.weight.flatten(1), source.classifier[0].weight)


def test_missing_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="model.weights file not found"):
        create_backbone("inception_v3", 1, 1, weights=str(tmp_path / "nope.pth"))


class _WritesAFile:
    """Unpickling this runs code: it would create the file ``target``."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("suffix", [".ckpt", ".pth"])
def test_a_checkpoint_that_would_run_code_is_refused_unread(tmp_path, suffix):
    """model.weights=FILE (a medrepro .ckpt or a timm .pth) never unpickles code: the planted
    file is not written and the run stops with one sentence that names the checkpoint."""
    target = tmp_path / "written_by_the_checkpoint"
    checkpoint = tmp_path / f"shared{suffix}"
    torch.save({"state_dict": {}, "payload": _WritesAFile(target)}, checkpoint)
    with pytest.raises(UserError) as raised:
        create_backbone("test_resnet", num_outputs=1, in_chans=1, weights=str(checkpoint))
    assert not target.exists()
    message = str(raised.value)
    assert str(checkpoint) in message and "\n" not in message


@pytest.mark.parametrize("suffix", [".ckpt", ".pth", ".bin"])
@pytest.mark.parametrize("content", ["text", "a tensor"])
def test_weights_that_are_not_a_state_dict_stop_with_one_sentence_naming_the_file(tmp_path, suffix, content):
    """A text file (torch's own reader says ``KeyError: 101`` or ``UnpicklingError``) or a
    file holding one tensor: one line that names the file and what to give instead."""
    path = tmp_path / f"weights{suffix}"
    if content == "text":
        path.write_text("these are not weights\n")
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(UserError) as raised:
        create_backbone("test_resnet", num_outputs=1, in_chans=1, weights=str(path))
    message = str(raised.value)
    assert message.startswith(f"model.weights: {path} ") and "\n" not in message
    assert "state dict" in message and message.endswith(".")


def test_a_state_dict_of_another_model_stops_with_one_sentence(tmp_path):
    torch.save(timm.create_model("test_efficientnet").state_dict(), tmp_path / "other.pth")
    with pytest.raises(UserError) as raised:
        create_backbone("test_resnet", num_outputs=1, in_chans=1, weights=str(tmp_path / "other.pth"))
    message = str(raised.value)
    assert f"{tmp_path / 'other.pth'} does not fit model.name=test_resnet" in message
    assert "\n" not in message


def _runs_on_the_cpu(model, size):
    try:
        with torch.no_grad():
            model(torch.rand(1, 1, size, size))
    except RuntimeError:
        return False
    return True


def test_the_smallest_input_size_is_the_one_the_real_network_takes():
    """The check before anything is built names the same smallest size as a real forward
    pass of the real Inception V3 on the CPU: 74 px fails, 75 px runs."""
    model = timm.create_model("inception_v3", num_classes=1, in_chans=1).eval()
    assert not _runs_on_the_cpu(model, 74) and _runs_on_the_cpu(model, 75)
    check_input_size("inception_v3", 75)
    with pytest.raises(ConfigError) as raised:
        check_input_size("inception_v3", 74)
    assert "at least 75 px; set data.image_size=75 or more (299 is its usual size)" in str(raised.value)
    check_input_size("test_resnet", 8)  # no limit worth stopping for
