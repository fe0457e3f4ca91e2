"""Kaggle "Chest X-Ray Images (Pneumonia)" (Kermany et al. 2018), exactly as downloaded.

Layout: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg``. ``data.root`` may be the
folder that holds ``chest_xray/``, ``chest_xray/`` itself, or the doubly nested
``chest_xray/chest_xray/`` some archives unpack to; when the archive holds both copies the
outer one is read and the inner copy is never counted twice. ``__MACOSX`` and dot files
are ignored.

Patient ids come from the file names: ``person1234_bacteria_5.jpeg`` and
``person1234_virus_6.jpeg`` are PNEUMONIA patient ``person1234``; ``IM-0115-0001.jpeg`` is
NORMAL patient ``IM-0115`` and ``NORMAL2-IM-0428-0001.jpeg`` NORMAL patient
``NORMAL2-IM-0428``. The same id in Kaggle's train and test folders is taken to be the
same patient: the data set does not say otherwise, and grouping them can only remove
leakage, never add it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medrepro.core.records import SPLITS, ImageRecord
from medrepro.datamodules.sources.published_layout import (
    PublishedLayout,
    check_fixed_layout,
    from_kaggle,
)

log = logging.getLogger(__name__)
KAGGLE_PAGE = "https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia"
PATIENT_ID_REGEX = r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)"
CLASS_NAMES = ("NORMAL", "PNEUMONIA")


class KagglePneumoniaSource:
    """Yield the 5,856 Kaggle images with their patient id and Kaggle's own split."""

    def __init__(
        self,
        root: str | Path,
        class_names: list[str] | None = None,
        patient_id_regex: str = PATIENT_ID_REGEX,
        layout: str = "auto",
    ) -> None:
        check_fixed_layout(layout, "split_folders", "data=pneumonia")
        self.root = Path(root).expanduser()
        self.class_names = list(class_names or CLASS_NAMES)
        self.patient_id_regex = patient_id_regex
        self.layout = PublishedLayout(
            title="Kaggle chest X-ray (pneumonia) data set",
            get_it=from_kaggle(KAGGLE_PAGE),
            required=[f"train/{name}" for name in self.class_names],
            nestings=("", "chest_xray", "chest_xray/chest_xray"),
            demo="demo_pneumonia",
        )

    def prepare(self) -> None:
        """Nothing to download: Kaggle needs a login, so the user downloads it."""

    def records(self) -> list[ImageRecord]:
        records = self.layout.records(
            self.root, "split_folders", self.class_names, self.patient_id_regex
        )
        missing = sorted(set(SPLITS) - {r.given_split for r in records})
        if missing:
            log.warning("the Kaggle layout in %s has no %s folder", self.root, ", ".join(missing))
        return records
