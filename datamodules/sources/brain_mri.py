"""Kaggle "Brain MRI Images for Brain Tumor Detection" (navoneel), exactly as downloaded.

Layout: ``yes/`` (tumour, 155 images) and ``no/`` (98 images), JPEGs with untidy names
(``Y1.jpg``, ``Y7.JPG``, ``no 5.jpg``, ``7 no.jpeg``) and modes L, RGB, RGBA and P. The
Kaggle archive holds the two folders twice, at its top level and inside
``brain_tumor_dataset/``: the top-level copy is read when present, else the inner one, and
no image is ever counted twice. The file names carry no patient id
(``patient_id_regex`` reads one from yours if they do).
"""

from __future__ import annotations

from pathlib import Path

from medrepro.core.records import ImageRecord
from medrepro.datamodules.sources.published_layout import (
    PublishedLayout,
    check_fixed_layout,
    from_kaggle,
)

KAGGLE_PAGE = "https://www.kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection"
CLASS_NAMES = ("no", "yes")


class BrainMriSource:
    """Yield every image of the ``no`` and ``yes`` folders once."""

    def __init__(
        self,
        root: str | Path,
        class_names: list[str] | None = None,
        patient_id_regex: str | None = None,
        layout: str = "auto",
    ) -> None:
        check_fixed_layout(layout, "class_folders", "data=brain_mri")
        self.patient_id_regex = patient_id_regex
        self.root = Path(root).expanduser()
        self.class_names = list(class_names or CLASS_NAMES)
        self.layout = PublishedLayout(
            title="Kaggle brain MRI (navoneel) data set",
            get_it=from_kaggle(KAGGLE_PAGE),
            required=list(self.class_names),
            nestings=("", "brain_tumor_dataset"),
            demo="demo_brain_mri",
        )

    def prepare(self) -> None:
        """Nothing to download: Kaggle needs a login, so the user downloads it."""

    def records(self) -> list[ImageRecord]:
        return self.layout.records(self.root, "class_folders", self.class_names, self.patient_id_regex)
