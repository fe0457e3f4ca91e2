"""A published data set as downloaded: one source for all of them, configured by data.

What differs between the published data sets (Kaggle pneumonia, brain MRI, the
three-class COVID-19 set, a cardiomegaly export) is data, stated in their
``conf/data/<name>.yaml`` under ``data.source``: the title, how to get it, where in the
unpacked archive the class folders may start, whether the layout is fixed, the demo data
set to suggest, a patient-id regex, and the variants (twin folders of the same images).
This class finds the class folders (:class:`PublishedLayout`) and reads them as class or
split folders (:class:`~medrepro.datamodules.sources.folder.FolderSource`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from medrepro.core.errors import ConfigError
from medrepro.core.records import SPLITS, ImageRecord
from medrepro.datamodules.sources.folder import FolderSource
from medrepro.datamodules.sources.published_layout import PublishedLayout

log = logging.getLogger(__name__)


class PublishedSource:
    """Yield every image of a published data set once, wherever below ``root`` its
    archive put the class folders.

    Args:
        root: ``data.root``.
        title: the data set's name as its users know it (used in messages).
        download_hint: how to get it, a phrase that goes on with "so that DIR exists".
        class_names: the class folder names (``data.class_names``).
        demo: the demo data set to suggest when the data is not found.
        nestings: where the class folders may start, relative to ``root``, tried in order
            (``""`` is ``root``; ``*`` stands for any one folder); the first is taken, so
            an archive holding two copies is never counted twice.
        fixed_layout: ``class_folders`` or ``split_folders`` when the data set always has
            that layout (``layout`` may then only confirm it); ``None`` lets ``layout``
            choose, as for ``data=folder``.
        layout: ``data.source.layout``: ``auto``, ``class_folders`` or ``split_folders``.
        patient_id_regex: regex on the file name whose first group is the patient id.
        variant, variants: for data sets published as twin folders of the same images
            (``data.variant``): each variant's ``nestings`` replace ``nestings`` (other keys,
            such as ``channels``, are for the data config).
    """

    def __init__(
        self,
        root: str | Path,
        title: str,
        download_hint: str,
        class_names: Sequence[str],
        demo: str,
        nestings: Sequence[str] = ("",),
        fixed_layout: str | None = None,
        layout: str = "auto",
        patient_id_regex: str | None = None,
        variant: str | None = None,
        variants: Mapping[str, Mapping] | None = None,
    ) -> None:
        if fixed_layout is not None and layout not in ("auto", fixed_layout):
            raise ConfigError(
                f"The {title} always has the layout {fixed_layout}; "
                f"remove data.source.layout={layout}."
            )
        if variants:
            if variant not in variants:
                raise ConfigError(
                    f"data.variant must be one of {', '.join(variants)}, not '{variant}'."
                )
            nestings = variants[variant].get("nestings", nestings)
        self.root = Path(root).expanduser()
        self.folder_layout = fixed_layout or layout
        self.class_names = list(class_names)
        self.patient_id_regex = patient_id_regex
        self.layout = PublishedLayout(
            title=title,
            get_it=download_hint,
            class_names=self.class_names,
            folder_layout=self.folder_layout,
            nestings=tuple(nestings),
            demo=demo,
        )

    def prepare(self) -> None:
        """Nothing to download: Kaggle needs a login and private data sets are exported
        by their users."""

    def records(self) -> list[ImageRecord]:
        start = self.layout.locate(self.root)
        if start != self.root:
            log.info("reading the %s at %s", self.layout.title, start)
        records = FolderSource(
            start, self.folder_layout, self.class_names, self.patient_id_regex,
            other_folders="warn",  # archives hold other folders (brain MRI: a second copy)
        ).records()
        given = {r.given_split for r in records}
        missing = sorted(set(SPLITS) - given)
        if None not in given and missing:
            log.warning("the %s in %s has no %s folder", self.layout.title, start,
                        ", ".join(missing))
        return records
