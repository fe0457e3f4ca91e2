"""The ``augment`` config group's pipelines: named random steps, composed in order.

A pipeline is a mapping of named albumentations transforms rather than a list, so that a
config can extend another (``augment=flip`` is ``augment=basic`` plus one step) and a
user can drop a step (``augment.steps.brightness_contrast=null``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import albumentations as A


def compose_steps(steps: Mapping[str, Callable | None], seed: int | None = None) -> A.Compose:
    """``steps``' transforms in their order (``None`` ones left out) as one seeded
    ``albumentations.Compose``."""
    return A.Compose([step for step in steps.values() if step is not None], seed=seed)
