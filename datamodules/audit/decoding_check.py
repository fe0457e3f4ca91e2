"""Decode every file once before training, when there is no image cache to do it.

The quick audit reads headers only, so a file whose header is fine but whose pixels are
not (a truncated DICOM, a DICOM without pixel data, a PNG with corrupt image data) would
otherwise stop training in the middle of an epoch. With ``data.cache.enabled=true`` the
cache build decodes every file anyway and records the ones it could not
(:mod:`medrepro.datamodules.cache.image_cache`); without a cache this module does it.
Files that decoded are remembered in the :class:`FileFactsStore` (keyed by path, size and
modification time), so the jobs of a sweep decode each file once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from medrepro.datamodules.audit.file_facts_store import FileFactsStore, file_key
from medrepro.datamodules.transforms.image_reader import UnreadableImage, read_image


def undecodable_files(
    paths: Sequence[str], max_pixels: int, store: FileFactsStore | None = None,
    workers: int | None = None,
) -> dict[str, UnreadableImage]:
    """The files of ``paths`` that :func:`read_image` cannot decode, with the error of each
    (in the order of ``paths``); files ``store`` remembers as decoded are not read again."""
    keys = {path: file_key(path) for path in paths} if store is not None else {}
    pending = [p for p in paths if store is None or keys[p] not in store.decoded]
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        errors = dict(zip(pending, pool.map(lambda p: _decoding_error(p, max_pixels), pending)))
    if store is not None:
        decoded = {keys[p] for p, error in errors.items() if error is None}
        if decoded - store.decoded:
            store.decoded |= decoded
            store.save()  # skipped where the folder cannot be written
    return {p: errors[p] for p in paths if errors.get(p) is not None}


def _decoding_error(path: str, max_pixels: int) -> UnreadableImage | None:
    try:
        read_image(path, 1, max_pixels)
    except UnreadableImage as error:
        return error
    return None
