"""torchmetrics-based stage metrics against scikit-learn on the same predictions."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from medrepro.lightning_modules.metrics import ClassificationMetrics


def feed(metrics, probabilities, target, batch=7):
    losses = torch.rand(len(target))
    for start in range(0, len(target), batch):
        part = slice(start, start + batch)
        metrics.update(probabilities[part], target[part], losses[part].mean())
    return metrics.compute(), losses


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_metrics_match_sklearn(threshold):
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 2, (101,), generator=generator)
    positive = (0.35 * target + 0.65 * torch.rand(101, generator=generator)).clamp(0, 1)
    probabilities = torch.stack([1 - positive, positive], dim=1)
    (values, confusion), _ = feed(ClassificationMetrics(["neg", "pos"], threshold), probabilities, target)
    y, p = target.numpy(), positive.numpy()
    predicted = (p >= threshold).astype(int)
    expected = {
        "acc": skm.accuracy_score(y, predicted),
        "precision": skm.precision_score(y, predicted),
        "recall": skm.recall_score(y, predicted),
        "f1": skm.f1_score(y, predicted),
        "specificity": skm.recall_score(y, predicted, pos_label=0),
        "auroc": skm.roc_auc_score(y, p),
        "mse": skm.mean_squared_error(y, p),
        "precision_neg": skm.precision_score(y, predicted, pos_label=0),
        "recall_neg": skm.recall_score(y, predicted, pos_label=0),
        "f1_neg": skm.f1_score(y, predicted, pos_label=0),
        "f1_pos": skm.f1_score(y, predicted),
    }
    for key, value in expected.items():
        assert float(values[key]) == pytest.approx(value, abs=1e-5), key
    np.testing.assert_array_equal(confusion.numpy(), skm.confusion_matrix(y, predicted))


def test_multiclass_metrics_match_sklearn():
    generator = torch.Generator().manual_seed(1)
    target = torch.randint(0, 3, (120,), generator=generator)
    logits = torch.randn(120, 3, generator=generator) + 1.5 * torch.nn.functional.one_hot(target, 3)
    probabilities = torch.softmax(logits, dim=1)
    (values, confusion), _losses = feed(
        ClassificationMetrics(["normal", "pneumonia", "COVID-19"]), probabilities, target
    )
    y, p = target.numpy(), probabilities.numpy()
    predicted = p.argmax(axis=1)
    one_hot = np.eye(3)[y]
    recalls = skm.recall_score(y, predicted, average=None)
    specificities = [
        skm.recall_score(y == c, predicted == c, pos_label=False) for c in range(3)
    ]
    expected = {
        "acc": skm.accuracy_score(y, predicted),
        "precision": skm.precision_score(y, predicted, average="macro"),
        "recall": recalls.mean(),
        "f1": skm.f1_score(y, predicted, average="macro"),
        "specificity": np.mean(specificities),
        "auroc": skm.roc_auc_score(y, p, multi_class="ovr", average="macro"),
        "mse": skm.mean_squared_error(one_hot, p),
        "recall_covid_19": recalls[2],
        "precision_pneumonia": skm.precision_score(y, predicted, average=None)[1],
    }
    for key, value in expected.items():
        assert float(values[key]) == pytest.approx(value, abs=1e-5), key
    np.testing.assert_array_equal(confusion.numpy(), skm.confusion_matrix(y, predicted))


def test_loss_is_the_image_weighted_epoch_mean():
    metrics = ClassificationMetrics(["a", "b"])
    probabilities = torch.tensor([[0.9, 0.1]] * 3)
    metrics.update(probabilities[:2], torch.tensor([0, 0]), torch.tensor(1.0))
    metrics.update(probabilities[2:], torch.tensor([1]), torch.tensor(4.0))
    values, _ = metrics.compute()
    assert float(values["loss"]) == pytest.approx((1.0 * 2 + 4.0) / 3)
    metrics.reset()
    metrics.update(probabilities[:1], torch.tensor([0]), torch.tensor(2.0))
    assert float(metrics.compute()[0]["loss"]) == pytest.approx(2.0)
