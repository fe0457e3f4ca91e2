"""A data set's images under a trained model's class names (external validation): the
classes of the data set are mapped to the model's, and images of classes the model does
not know are left out and counted."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace

from medrepro.core.errors import ConfigError, DataError
from medrepro.core.records import ImageRecord

log = logging.getLogger(__name__)


class ClassMappedSource:
    """The records of ``source`` relabelled with ``model_classes``: a class of the data set
    keeps its name when the model has a class of that name, ``class_map`` maps the others
    (``{normal: NORMAL, pneumonia: PNEUMONIA}``; several data set classes may map to one
    model class), and the images of any other class are left out (``left_out``: images per
    data set class).

    Args:
        source: the data set's own source (``prepare()``, ``records()``).
        model_classes: the trained model's classes, in its output order.
        class_map: data set class -> model class (the setting ``eval.class_map``).
    """

    def __init__(self, source, model_classes: Sequence[str],
                 class_map: Mapping[str, str] | None = None, setting: str = "eval.class_map") -> None:
        self.source = source
        self.model_classes = list(model_classes)
        self.class_map = {str(k): str(v) for k, v in (class_map or {}).items()}
        self.setting = setting
        unknown = sorted(v for v in set(self.class_map.values()) if v not in self.model_classes)
        if unknown:
            raise ConfigError(
                f"{setting} maps to {', '.join(unknown)}, which the model does not have; map the "
                f"data set's classes to the model's: {', '.join(self.model_classes)}."
            )
        self.left_out: dict[str, int] = {}
        self.found_classes: list[str] = []

    def prepare(self) -> None:
        self.source.prepare()

    def records(self) -> list[ImageRecord]:
        records = self.source.records()
        self.found_classes = sorted({r.label for r in records})
        mapping = {name: name for name in self.found_classes if name in self.model_classes}
        mapping.update(self.class_map)
        absent = sorted(set(self.class_map) - set(self.found_classes))
        if absent:
            raise ConfigError(
                f"{self.setting} names {', '.join(absent)}, which the data set does not have; its "
                f"classes are {', '.join(self.found_classes) or 'none'}."
            )
        kept = [replace(r, label=mapping[r.label]) for r in records if r.label in mapping]
        self.left_out = dict(sorted(Counter(r.label for r in records if r.label not in mapping).items()))
        if not kept:
            example = ", ".join(f"{found}: {model}" for found, model
                                in zip(self.found_classes, self.model_classes))
            raise DataError(
                f"The data set has none of the model's classes ({', '.join(self.model_classes)}); "
                f"its classes are {', '.join(self.found_classes) or 'none'}: map them with "
                f"{self.setting}={{{example}}}."
            )
        if self.left_out:
            log.warning("Left out %d image(s) of classes the model does not know (%s).",
                        sum(self.left_out.values()),
                        ", ".join(f"{name}: {count}" for name, count in self.left_out.items()))
        return kept
