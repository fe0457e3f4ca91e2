"""Decoded-image cache: deterministic pre-processing runs once per image, into one
memory-mapped ``uint8`` array that every later epoch, run and sweep job reads instead of
the image files.

* **What is cached:** :func:`medrepro.datamodules.image_dataset.preprocess_image` of every image of
  the manifest (read, mode conversion to ``data.channels``, then ``data.preprocess.steps``:
  resize, brain crop, ENH, ...). Random augmentation is not cached; it runs per epoch on
  the cached pixels.
* **Quantisation:** pixels are stored as 8-bit, ``round(255 * x)`` of the pre-processed
  float image in ``[0, 1]``, and read back as ``x' = byte / 255`` (``|x - x'| <= 1/510``).
  A 16-bit TIFF therefore reaches the model with 256 grey levels instead of 65,536, as it
  would from an 8-bit export; set ``data.cache.enabled=false`` to train on the full 16-bit range.
* **Key:** a hash of the file list (absolute paths, sizes, modification times), the
  channels, the pre-processing pipeline (``albumentations.to_dict``, parameters included),
  ``data.checks.max_image_pixels`` (which files count as unreadable), the library versions
  that compute it and the source of :mod:`medrepro.datamodules.transforms.image_reader`.
  A changed, added or removed file, or any changed pre-processing setting gives a new key,
  hence a new cache; old caches stay until you delete the folder.
* **Files:** ``<cache_dir>/<key>.npy`` (``[N, H, W, C]`` uint8) and ``<key>.json`` (the
  paths in row order and the files that could not be decoded, with the reason, written
  last: its presence marks a complete cache).
* **Unreadable files:** a file that cannot be decoded does not stop the build: its row
  stays black and the index lists it under ``unreadable``, so the check before training
  (:mod:`medrepro.datamodules.audit.preflight`) finds every such file in one pass and
  later runs know them without decoding anything; reading such a row raises the file's
  :class:`~medrepro.datamodules.transforms.image_reader.UnreadableImage`.
* **Build:** by worker processes (``num_workers``; ``auto``, one per CPU core, see
  :func:`build_workers`), each pre-processing chunks of images with one OpenCV thread
  while this process writes the chunks into their rows, so that the build scales with the
  cores (``python benchmark.py --cache-build`` measures 1 and N workers).
* **Random state:** the build's DataLoader has its own ``torch.Generator``, so building
  the cache leaves the global random state (weight initialisation, shuffling) as it was:
  the run that builds the cache and the runs that read it train alike.
* **Concurrency:** a builder writes to a temporary file in the same folder and renames it
  into place (``os.replace``, atomic), so a reader never sees a half-written cache; on
  POSIX an advisory lock makes concurrent jobs of a sweep wait for the first builder
  instead of repeating its work.

Build a cache ahead of time (with a progress bar), with the same overrides as training::

    medrepro-cache data=folder data.root=/path/to/images
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medrepro.core.errors import ConfigError, DataError
from medrepro.core.run_folder import write_atomic
from medrepro.core.worker_processes import worker_start_context
from medrepro.datamodules.image_dataset import preprocess_image
from medrepro.datamodules.transforms import image_reader
from medrepro.datamodules.transforms.image_reader import UnreadableImage

log = logging.getLogger(__name__)
CACHE_FORMAT = 2
MAX_CHUNK = 16


class ImageCache:
    """Pre-processed images of ``paths`` as one read-only ``uint8`` memory map.

    Use :meth:`open_or_build`. ``image(path)`` returns the cached image as ``float32
    [H, W, C]`` in ``[0, 1]``. ``unreadable`` maps the files that could not be decoded to
    the reason. The memory map is opened lazily in each process, so a cache travels to
    DataLoader workers as a file name, not as a copy of its pixels.
    """

    def __init__(self, array_path: Path, paths: Sequence[str],
                 unreadable: dict[str, str] | None = None) -> None:
        self.array_path = Path(array_path)
        self.rows = {path: row for row, path in enumerate(paths)}
        self.unreadable = dict(unreadable or {})
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.array_path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        """The number of images cached (files that could not be decoded not counted)."""
        return len(self.rows) - len(self.unreadable)

    def __contains__(self, path: str) -> bool:
        return path in self.rows

    def image(self, path: str) -> np.ndarray:
        if path in self.unreadable:
            raise UnreadableImage(path, self.unreadable[path])
        return self.array[self.rows[path]].astype(np.float32) / np.float32(255)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}

    @classmethod
    def open_or_build(
        cls,
        paths: Sequence[str],
        channels: int,
        preprocess: Callable | None,
        cache_dir: str | Path,
        num_workers: int | str = 0,
        progress: bool | None = None,
        max_pixels: int | None = None,
    ) -> ImageCache:
        """The cache of ``paths`` pre-processed by ``preprocess``: opened when a complete
        one with the same key exists in ``cache_dir``, else built there first, by
        ``num_workers`` worker processes (``auto``: one per core, see
        :func:`build_workers`). Images of more than ``max_pixels`` pixels count as
        unreadable (possible decompression bombs)."""
        paths = sorted({str(p) for p in paths})  # the same images in any order: one cache
        cache_dir = Path(cache_dir).expanduser()
        max_pixels = int(max_pixels or image_reader.DEFAULT_MAX_IMAGE_PIXELS)
        key = cache_key(paths, channels, preprocess, max_pixels)
        array_path, index_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
        if not index_path.is_file():
            try:
                cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ConfigError(
                    f"Cannot create the image cache folder {cache_dir} ({error}); set "
                    "data.cache.dir to a writable folder or data.cache.enabled=false."
                ) from error
            with _builder_lock(cache_dir / f"{key}.lock"):
                if not index_path.is_file():  # another job may have built it while we waited
                    _build(_PreprocessedBytes(paths, channels, preprocess, max_pixels),
                           array_path, index_path, num_workers, progress)
        else:
            log.info("Reading pre-processed images from the cache %s", array_path)
        index = json.loads(index_path.read_text())
        return cls(array_path, index["paths"], index.get("unreadable"))


def ensure_writable_folder(folder: str | Path) -> Path:
    """Create ``folder`` if needed and check that files can be written in it; a
    :class:`ConfigError` naming it and ``data.cache.dir`` when not. Cheap: one empty file
    is created and removed."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".writable.", dir=folder)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise ConfigError(
            f"The image cache folder {folder} cannot be written ({error.strerror or error}); "
            "set data.cache.dir to a writable folder, or data.cache.enabled=false to train "
            "without the cache."
        ) from error
    return folder


def cache_key(paths: Sequence[str], channels: int, preprocess: Callable | None,
              max_pixels: int = image_reader.DEFAULT_MAX_IMAGE_PIXELS) -> str:
    """Hex digest naming the cache of ``paths`` (see the module docstring)."""
    import cv2

    files = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as error:
            raise DataError(f"Cannot read image {path} ({error}); the data folder changed "
                            "since the split was made.") from error
        files.append((os.path.abspath(path), stat.st_size, stat.st_mtime_ns))
    recipe = {
        "format": CACHE_FORMAT,
        "channels": int(channels),
        "preprocess": describe_preprocess(preprocess),
        "max_image_pixels": int(max_pixels),  # which files count as unreadable
        "versions": {"albumentations": A.__version__, "opencv": cv2.__version__,
                     "numpy": np.__version__, "torch": torch.__version__.split("+")[0],
                     "image_reader": _source_digest(image_reader)},
        "files": files,
    }
    text = json.dumps(recipe, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _source_digest(module) -> str:
    """Digest of a module's source: a change in how files are read gives new caches."""
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:16]


def describe_preprocess(preprocess: Callable | None):
    """A stable, JSON-able description of a pre-processing pipeline and its parameters."""
    if preprocess is None:
        return None
    try:
        description = A.to_dict(preprocess)
        description.pop("__version__", None)
        return description
    except (AttributeError, TypeError, ValueError, NotImplementedError):
        # not an albumentations transform: its repr must say its parameters
        return repr(preprocess)


class _PreprocessedBytes(Dataset):
    """``(row, image)``: a pre-processed image as a ``uint8`` array (quantised where it is
    computed, so DataLoader workers pass a quarter of the bytes), or, for a file that
    cannot be decoded, the reason (a ``str``)."""

    def __init__(self, paths: Sequence[str], channels: int, preprocess: Callable | None,
                 max_pixels: int) -> None:
        self.paths, self.channels, self.preprocess = list(paths), channels, preprocess
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | str]:
        try:
            image = preprocess_image(self.paths[index], self.channels, self.preprocess,
                                     self.max_pixels)
        except UnreadableImage as error:
            return index, error.reason
        return index, quantise(image)


def quantise(image: np.ndarray) -> np.ndarray:
    """``float [H, W, C]`` in ``[0, 1]`` -> ``uint8``, rounding to the nearest level."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def build_workers(setting: int | str = "auto") -> int:
    """The worker processes that build a cache: ``auto``, every core this process may use
    (the build is a one-off job that has the machine to itself before training starts;
    none on a one-core machine), else the number given (0: in this process)."""
    if setting == "auto":
        cores = usable_cores()
        return cores if cores > 1 else 0
    return int(setting)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def chunk_size(images: int, workers: int) -> int:
    """Images a worker pre-processes per message to the building process: up to
    :data:`MAX_CHUNK`, so that passing results costs little beside decoding, and small
    enough that every worker gets about 8 chunks (they finish together)."""
    return max(1, min(MAX_CHUNK, -(-images // (8 * max(1, workers)))))


def _build(images: _PreprocessedBytes, array_path: Path, index_path: Path,
           num_workers: int | str, progress: bool | None) -> None:
    paths = images.paths
    workers = build_workers(num_workers)
    if workers and multiprocessing.current_process().daemon:
        workers = 0  # e.g. a multiprocessing.Pool worker, which may not start processes
    log.info("Building the image cache %s (%d images, once, %s)", array_path, len(paths),
             f"{workers} worker processes" if workers else "in this process")
    # chunks of images per message (each image alone would make the building process,
    # which receives and writes them, the bottleneck of many workers), taken as they come
    # (each carries its rows: a slow worker holds no other back); its own generator:
    # iterating a DataLoader draws a seed from the global torch state
    loader = DataLoader(images, batch_size=chunk_size(len(paths), workers), shuffle=False,
                        num_workers=workers, collate_fn=_as_list, generator=torch.Generator(),
                        in_order=False,
                        multiprocessing_context=worker_start_context() if workers else None)
    temporary = _temporary_path(array_path)
    try:
        with tqdm(total=len(paths), desc="caching images", unit="img",
                  disable=None if progress is None else not progress) as bar, \
                _one_opencv_thread(workers):
            array, unreadable = _write_rows(loader, paths, temporary, bar)
        array.flush()
        del array
        os.replace(temporary, array_path)
        if unreadable:
            log.warning("%d file(s) could not be decoded; the image cache lists them",
                        len(unreadable))
        write_atomic(index_path, json.dumps(
            {"format": CACHE_FORMAT, "paths": list(paths), "unreadable": unreadable}))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def _write_rows(loader: DataLoader, paths: Sequence[str], temporary: str,
                bar) -> tuple[np.memmap, dict[str, str]]:
    """Write the loader's images into their rows of a new memory-mapped array at
    ``temporary``; the array and the files that could not be decoded (their rows stay
    black), with the reason, in row order."""
    array, unreadable = None, {}
    for chunk in loader:
        for row, image in chunk:
            path = paths[row]
            if isinstance(image, str):
                unreadable[path] = image
                continue
            if array is None:
                array = np.lib.format.open_memmap(
                    temporary, mode="w+", dtype=np.uint8, shape=(len(paths), *image.shape))
            if image.shape != array.shape[1:]:
                raise ConfigError(
                    f"{path} is {image.shape[1]}x{image.shape[0]} after pre-processing, "
                    f"others {array.shape[2]}x{array.shape[1]}; the image cache needs one size: "
                    "end data.preprocess.steps with a Resize, or set data.cache.enabled=false."
                )
            array[row] = image
        bar.update(len(chunk))
    unreadable = {path: unreadable[path] for path in paths if path in unreadable}
    if array is None:
        if unreadable:
            path, reason = next(iter(unreadable.items()))
            raise UnreadableImage(path, reason, (
                f"None of the {len(paths)} images can be read, e.g. {path} ({reason}); "
                "check data.root (`python audit.py` lists every unreadable file)."))
        raise DataError("There are no images to cache.")
    return array, unreadable


def _as_list(items: list) -> list:
    return items


@contextlib.contextmanager
def _one_opencv_thread(workers: int):
    """N workers on N cores: OpenCV's own thread pool (one thread per core in each worker)
    would only make them compete (torch is single-threaded in workers already). Set in this
    process before the workers are forked, which inherit it, and restored afterwards:
    ``cv2.setNumThreads`` called in a forked worker can hang for ever when this process has
    already used OpenCV's pool (its lock is copied held, by a thread the fork did not copy)."""
    if not workers:
        yield
        return
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _temporary_path(final: Path) -> str:
    handle, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # as an ordinary file: a shared cache stays readable
    return name




@contextlib.contextmanager
def _builder_lock(path: Path):
    """An exclusive advisory lock (POSIX ``flock``); where there is none, builders may
    work in parallel, and the atomic rename still keeps the cache whole."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
