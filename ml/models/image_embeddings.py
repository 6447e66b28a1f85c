"""Frozen EfficientNet-Lite0 embeddings of product photos: what the ``image`` and ``fusion`` heads read.

Photos are decoded lazily, one batch at a time (never a whole split in memory). At training time the
embeddings are cached on disk, one file per split and input size, keyed by the stored photo's file
name: ingest names a photo ``<key>-<sha256[:12]>.<ext>`` (ml/images.py), so a name pins the bytes and
a second training on the same split reads the cache instead of running the network again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ml.images import IMAGES_DIR
from ml.models.efficientnet_lite import EMBEDDING_DIM

log = logging.getLogger(__name__)

CACHE_DIR = "image_embeddings"  # under settings.cache_dir: outside data/interim, a DVC output it would change


def photo_file(record: Mapping[str, Any], image_root: Path | None) -> Path | None:
    """The stored photo a record names (``image``: a path relative to ``image_root``), or None when
    it names none, names something else (a URL, a catalogue file name) or the file is gone."""
    image = record.get("image")
    if image_root is None or not isinstance(image, str) or not image.startswith(f"{IMAGES_DIR}/"):
        return None
    if ".." in Path(image).parts:
        return None
    path = image_root / image
    return path if path.is_file() else None


class ImageEmbedder:
    """The pretrained backbone (loaded on first use) and the input size it is run at."""

    def __init__(self, *, size: int, batch_size: int) -> None:
        self.size = size
        self.batch_size = batch_size
        self._model: Any = None
        self.computed = 0  # photos run through the network by this embedder (the cache's counterpart)

    def _backbone(self) -> Any:
        if self._model is None:
            from ml.models.efficientnet_lite import load_pretrained

            self._model = load_pretrained()
        return self._model

    def embed_files(self, paths: Sequence[Path]) -> np.ndarray:
        """(len(paths), 1280) float32; a photo that no longer decodes gets a row of NaN."""
        import torch

        from ml.models.efficientnet_lite import prepare

        out = np.full((len(paths), EMBEDDING_DIM), np.nan, dtype=np.float32)
        started = time.perf_counter()
        for start in range(0, len(paths), self.batch_size):
            images, rows = [], []
            for row, path in enumerate(paths[start:start + self.batch_size], start=start):
                try:
                    with Image.open(path) as image:
                        image.load()
                        images.append(image.convert("RGB"))
                    rows.append(row)
                except (OSError, ValueError) as exc:  # checked at ingest; a file changed since is skipped
                    log.warning("photo %s does not decode: %s", path, exc)
            if images:
                with torch.inference_mode():
                    out[rows] = self._backbone().features(prepare(images, size=self.size)).numpy()
                self.computed += len(images)
        if paths:
            log.debug("embedded %d photos at %d px in %.1f s", len(paths), self.size, time.perf_counter() - started)
        return out

    def embed_cached(self, paths: Sequence[Path], *, cache: Path | None) -> np.ndarray:
        """``embed_files`` through a cache file (.npz of names and vectors): only photos whose file name
        it lacks run through the network; the file is rewritten with every photo asked for."""
        names = [path.name for path in paths]
        known: dict[str, np.ndarray] = {}
        if cache is not None and cache.exists():
            with np.load(cache) as stored:
                known = dict(zip(stored["names"].tolist(), stored["vectors"], strict=True))
        missing = sorted({name for name in names if name not in known})
        if missing:
            by_name = {path.name: path for path in paths}
            log.info("embedding %d photos at %d px (%d cached)", len(missing), self.size,
                     len(set(names)) - len(missing))
            vectors = self.embed_files([by_name[name] for name in missing])
            known.update(zip(missing, vectors, strict=True))
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                keep = sorted(set(names))
                partial = cache.with_suffix(".tmp.npz")
                np.savez(partial, names=np.asarray(keep), vectors=np.stack([known[n] for n in keep]))
                partial.replace(cache)
        if not names:
            return np.empty((0, EMBEDDING_DIM), dtype=np.float32)
        return np.stack([known[name] for name in names]).astype(np.float32, copy=False)


def record_embeddings(embedder: ImageEmbedder, records: Sequence[Mapping[str, Any]], *, image_root: Path | None,
                      cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings of the records that have a photo, boolean mask of those records)."""
    files = [photo_file(record, image_root) for record in records]
    mask = np.asarray([f is not None for f in files], dtype=bool)
    vectors = embedder.embed_cached([f for f in files if f is not None], cache=cache)
    decoded = ~np.isnan(vectors).any(axis=1)
    if not decoded.all():  # a photo that stopped decoding counts as none
        positions = np.flatnonzero(mask)
        mask[positions[~decoded]] = False
        vectors = vectors[decoded]
    return vectors, mask


def cache_file(cache_dir: Path | None, *, split: str, size: int) -> Path | None:
    return None if cache_dir is None else cache_dir / f"lite0-{size}px" / f"{split}.npz"
