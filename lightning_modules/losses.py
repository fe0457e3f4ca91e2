"""Classification losses and the output activation that goes with each.

* ``bce``: one logit, sigmoid, binary cross-entropy (binary tasks);
* ``ce``: one logit per class, softmax, cross-entropy on integer targets (Keras
  "sparse categorical cross-entropy");
* ``ce_onehot``: one logit per class, softmax, cross-entropy against one-hot target
  vectors (Keras "categorical cross-entropy"): the targets are expanded to one-hot
  rows and the loss is ``-sum(one_hot * log_softmax(logits))``. For hard labels it is the
  same function of the same prediction as ``ce``;
* ``auto``: ``bce`` for two classes, ``ce`` for more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medrepro.core.errors import ConfigError

KINDS = ("auto", "bce", "ce", "ce_onehot")


class BinaryCrossEntropy(nn.Module):
    """``[B, 1]`` logits, integer targets in {0, 1}; probability of class 1 by sigmoid."""

    def __init__(self, label_smoothing: float = 0.0, pos_weight: float | None = None) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        self.pos_weight = None if pos_weight is None else torch.tensor(float(pos_weight))

    def num_outputs(self, num_classes: int) -> int:
        return 1

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(logits.dtype)
        if self.label_smoothing:
            target = target * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), target, pos_weight=pos_weight)

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        """``[B, 2]`` class probabilities ``(1 - p, p)``."""
        positive = torch.sigmoid(logits.float().squeeze(1))
        return torch.stack([1 - positive, positive], dim=1)


class CrossEntropy(nn.Module):
    """``[B, C]`` logits, integer targets; probabilities by softmax."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def num_outputs(self, num_classes: int) -> int:
        return num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target.long(), label_smoothing=self.label_smoothing)

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)


class OneHotCrossEntropy(CrossEntropy):
    """``[B, C]`` logits, integer targets turned into one-hot rows (smoothed as Keras
    does: ``one_hot * (1 - s) + s / C``); loss ``-sum(target * log_softmax(logits))``."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(target.long(), logits.shape[1]).to(logits.dtype)
        if self.label_smoothing:
            one_hot = one_hot * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[1]
        return -(one_hot * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def build_loss(num_classes: int, kind: str = "auto", **options) -> nn.Module:
    """The loss for ``kind`` (see the module docstring) and a task of ``num_classes``."""
    if kind not in KINDS:
        raise ConfigError(f"loss.kind must be one of {', '.join(KINDS)}, not '{kind}'.")
    if kind == "auto":
        kind = "bce" if num_classes == 2 else "ce"
    if kind == "bce":
        if num_classes != 2:
            raise ConfigError(
                f"loss=bce needs exactly two classes but the data has {num_classes}; "
                "use loss=ce or loss=auto."
            )
        return BinaryCrossEntropy(**options)
    options.pop("pos_weight", None)
    return OneHotCrossEntropy(**options) if kind == "ce_onehot" else CrossEntropy(**options)
