"""Three-class chest X-rays (normal, pneumonia, COVID-19), as study 5 used them.

Two layouts:

* Qi et al.'s Kaggle data set (``endiqq/largest-covid19-dataset``): twin folders
  ``CXR_ijcar_mix/`` (the X-rays) and ``Enh_ijcar_mix/`` (their local-phase enhanced,
  three-channel versions, same file names), each holding one folder per class;
  ``variant`` (``data.variant=cxr|enh``) picks the twin. The twins may sit in
  ``data.root`` or one folder below it.
* Any folder with one sub-folder per class (``variant=cxr`` only).

Inside the chosen folder, the classes may also sit in ``train/``, ``val/``, ``test/``
folders (kept as the given split). Class folder names are ``class_names``
(``data.class_names``). The file names carry no patient id (``patient_id_regex`` reads
one from yours if they do).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from medrepro.core.errors import ConfigError
from medrepro.core.records import SPLITS, ImageRecord
from medrepro.datamodules.sources.folder import FolderSource
from medrepro.datamodules.sources.published_layout import (
    PublishedLayout,
    from_kaggle,
    visible_folder_names,
)

KAGGLE_PAGE = "https://www.kaggle.com/datasets/endiqq/largest-covid19-dataset"
CLASS_NAMES = ("normal", "pneumonia", "COVID-19")
VARIANTS = {
    "cxr": {"folder": "CXR_ijcar_mix", "channels": 1},
    "enh": {"folder": "Enh_ijcar_mix", "channels": 3},
}


class Covid3Source:
    """Yield the images of one variant (``cxr`` or ``enh``) of the three-class data set."""

    def __init__(
        self,
        root: str | Path,
        variant: str = "cxr",
        variants: Mapping[str, Mapping] | None = None,
        class_names: list[str] | None = None,
        patient_id_regex: str | None = None,
        layout: str = "auto",
    ) -> None:
        self.folder_layout = layout
        self.patient_id_regex = patient_id_regex
        self.variants = {k: dict(v) for k, v in (variants or VARIANTS).items()}
        if variant not in self.variants:
            raise ConfigError(
                f"data.variant must be one of {', '.join(self.variants)}, not '{variant}'."
            )
        self.root = Path(root).expanduser()
        self.variant = variant
        self.folder = self.variants[variant]["folder"]
        self.class_names = list(class_names or CLASS_NAMES)
        first = self.class_names[0]
        self.layout = PublishedLayout(
            title=f"Three-class chest X-ray data set ({variant})",
            get_it=from_kaggle(KAGGLE_PAGE),
            required=[f"{self.folder}/{first}"],
            demo="demo_pneumonia",
        )

    def prepare(self) -> None:
        """Nothing to download: Kaggle needs a login, so the user downloads it."""

    def records(self) -> list[ImageRecord]:
        start = self._find_start()
        if start is None:
            raise self.layout.error(self.root)
        return FolderSource(
            start, self.folder_layout, self.class_names, self.patient_id_regex
        ).records()

    def _find_start(self) -> Path | None:
        """The variant's folder, in data.root or one folder below it; for ``cxr`` also
        data.root itself when it holds the class folders."""
        if not self.root.is_dir():
            return None
        for below in ["", *visible_folder_names(self.root)]:
            folder = self.root / below / self.folder
            if self._holds_classes(folder):
                return folder
        if self.variant == "cxr" and self._holds_classes(self.root):
            return self.root
        return None

    def _holds_classes(self, folder: Path) -> bool:
        first = self.class_names[0]
        return (folder / first).is_dir() or any((folder / s / first).is_dir() for s in SPLITS)
