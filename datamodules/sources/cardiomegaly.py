"""Cardiomegaly chest X-rays as study 1 used them: ``normal/`` and ``cardiomegaly/``.

The study's hospital data set is private; any export laid out the same way works: TIFF
(8 or 16 bit) or DICOM (``.dcm``) files, in one folder per class (names set by
``data.class_names``), sub-folders allowed; or ``train/``, ``val/`` and ``test/`` folders
each holding the class folders (``data.source.layout``, as for ``data=folder``). The file names carry no patient id unless
``patient_id_regex`` says how to read one.
"""

from __future__ import annotations

from pathlib import Path

from medrepro.core.records import ImageRecord
from medrepro.datamodules.sources.published_layout import PublishedLayout

CLASS_NAMES = ("normal", "cardiomegaly")
GET_IT = (
    "Export the frontal chest X-rays (TIFF or DICOM) from your PACS into one folder per class"
)


class CardiomegalySource:
    """Yield every TIFF, DICOM (or other image) file of the two class folders."""

    def __init__(
        self,
        root: str | Path,
        class_names: list[str] | None = None,
        patient_id_regex: str | None = None,
        layout: str = "auto",
    ) -> None:
        self.root = Path(root).expanduser()
        self.folder_layout = layout
        self.class_names = list(class_names or CLASS_NAMES)
        self.patient_id_regex = patient_id_regex
        self.layout = PublishedLayout(
            title="Cardiomegaly data set",
            get_it=GET_IT,
            required=list(self.class_names),
            demo="demo_cardiomegaly",
        )

    def prepare(self) -> None:
        """Nothing to download: the data set is private."""

    def records(self) -> list[ImageRecord]:
        return self.layout.records(
            self.root, self.folder_layout, self.class_names, self.patient_id_regex
        )
