"""Source for the embedded demo data sets: generate the phantoms once, then read them
from disk exactly like a real data set (same folder layout, file types and names)."""

from __future__ import annotations

from pathlib import Path

from medrepro.core.errors import ConfigError
from medrepro.core.records import ImageRecord
from medrepro.datamodules.demo.phantoms import DEMO_DATASETS, ensure_demo_dataset
from medrepro.datamodules.sources.folder import FolderSource


class DemoSource:
    """Generate demo data set ``dataset`` below ``root`` (once) and scan it as folders."""

    def __init__(
        self,
        root: str | Path,
        dataset: str,
        image_size: int = 256,
        images_per_class: int = 150,
        seed: int = 0,
        layout: str = "auto",
        class_names: list[str] | None = None,
        patient_id_regex: str | None = None,
    ) -> None:
        if dataset not in DEMO_DATASETS:
            raise ConfigError(
                f"Unknown demo data set '{dataset}'; choose one of {', '.join(DEMO_DATASETS)}."
            )
        self.root = Path(root).expanduser()
        self.dataset = dataset
        self.image_size = image_size
        self.images_per_class = images_per_class
        self.seed = seed
        self.folder_settings = {
            "layout": layout, "class_names": class_names, "patient_id_regex": patient_id_regex
        }
        self.data_dir: Path | None = None

    def prepare(self) -> None:
        self.data_dir = ensure_demo_dataset(
            self.dataset,
            self.root,
            image_size=self.image_size,
            images_per_class=self.images_per_class,
            seed=self.seed,
        )

    def records(self) -> list[ImageRecord]:
        if self.data_dir is None:
            self.prepare()
        return FolderSource(self.data_dir, **self.folder_settings).records()
