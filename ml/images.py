"""Find and check each product's photo: the image half of ingest.

A dataset names its photos in params.yaml (``images:``, see ``ImageSource``): an archive (tar, tar.gz
or a folder), a member pattern such as ``images/{id}.jpg``, and optionally a join table that lists a
product's photos (several per product; the first good one is kept, the count recorded).

``ImageResolver`` reads the archive once, as a stream (one photo in memory at a time, never the
archive), checks every photo a product may use (``check_image``) and writes the good ones, bytes
unchanged, to ``<interim_dir>/images/<dataset>/<key>-<sha256[:12]>.<ext>``. The content hash in the
name makes the Product row's ``image`` (that path, relative to ``interim_dir``) pin the exact bytes,
so the split's content hash, and with it a model version's data version, covers the photos too.
Ingest then asks ``image_for(product_id)`` per kept row, which also counts how many rows got a photo
and why the others did not (``ImageReason``). A bad photo never drops its row: the row keeps its text.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from PIL import Image, UnidentifiedImageError

from ml.params import DatasetSpec, ImageJoin, ImageLimits, ImageSource
from ml.settings import MLSettings

log = logging.getLogger(__name__)

IMAGES_DIR = "images"  # under interim_dir; the Product row's `image` starts with it
INDEX_FILE = "index.jsonl"  # per dataset: one line per kept product (photo path, photos listed, reason)
# Decoders allowed to run on untrusted bytes: common photo formats only (never EPS, which shells out).
# A multi-picture JPEG is opened by the JPEG decoder and reports itself as MPO.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class ImageReason(StrEnum):
    MISSING = "missing"  # no photo for the product: not listed, or not in the archive
    EMPTY = "empty"  # 0 bytes
    NOT_AN_IMAGE = "not_an_image"  # not one of FORMATS (text, HTML, an unknown format)
    TRUNCATED = "truncated"  # an image whose data ends early
    CORRUPT = "corrupt"  # an image whose data does not decode (bad checksum, broken stream)
    TOO_LARGE = "too_large"  # more pixels than max_pixels (decompression bomb) or more bytes than max_bytes
    TOO_SMALL = "too_small"  # a side shorter than min_side


@dataclass(frozen=True, slots=True)
class ImageCheck:
    """The verdict on one photo: ``reason`` None means it decodes fully and fits the limits."""

    reason: ImageReason | None
    detail: str = ""
    format: str | None = None
    width: int = 0
    height: int = 0

    @property
    def ok(self) -> bool:
        return self.reason is None


@functools.cache
def _decoders() -> tuple[str, ...]:
    Image.init()  # registers every plugin: Image.open(formats=...) only knows registered ones
    return tuple(name for name in FORMATS if name in Image.OPEN)


def check_image(data: bytes, *, limits: ImageLimits) -> ImageCheck:
    """Check one photo's bytes with Pillow: identified as one of FORMATS, within the limits (read
    from the header, before any pixel is decoded), then fully decoded (verify, then load).

    Thread-safe: no Pillow global is changed. The pixel limit is checked here from the header;
    Pillow's own guard (2 x ``Image.MAX_IMAGE_PIXELS``) only ever fires on larger images still."""
    if not data:
        return ImageCheck(ImageReason.EMPTY, "0 bytes")
    if len(data) > limits.max_bytes:
        return ImageCheck(ImageReason.TOO_LARGE, f"{len(data):,} bytes (limit {limits.max_bytes:,})")
    fmt, width, height = None, 0, 0
    try:
        with Image.open(io.BytesIO(data), formats=_decoders()) as image:
            fmt, (width, height) = image.format, image.size
            if (why := _size_problem(width, height, limits)) is not None:
                return ImageCheck(why[0], why[1], fmt, width, height)
            image.verify()  # checksums and structure; the image cannot be used after this
        with Image.open(io.BytesIO(data), formats=_decoders()) as image:
            image.load()  # decodes every pixel: catches data that ends early
    except Image.DecompressionBombError as exc:
        return ImageCheck(ImageReason.TOO_LARGE, _short(exc))
    except UnidentifiedImageError:
        return ImageCheck(ImageReason.NOT_AN_IMAGE, f"not a {'/'.join(FORMATS[:4])}/... image")
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error... on bad data
        reason = ImageReason.TRUNCATED if "truncated" in str(exc).lower() else ImageReason.CORRUPT
        return ImageCheck(reason, _short(exc), fmt, width, height)
    return ImageCheck(None, "", fmt, width, height)


def _size_problem(width: int, height: int, limits: ImageLimits) -> tuple[ImageReason, str] | None:
    if width * height > limits.max_pixels:
        return ImageReason.TOO_LARGE, f"{width}x{height} = {width * height:,} pixels (limit {limits.max_pixels:,})"
    if min(width, height) < limits.min_side:
        return ImageReason.TOO_SMALL, f"{width}x{height} (a side under {limits.min_side} px)"
    return None


def _short(exc: BaseException, limit: int = 120) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."


def stored_path(settings: MLSettings, image: str | None) -> Path | None:
    """The file behind a Product row's ``image`` when ingest stored it (a path under ``images/``,
    relative to ``interim_dir``); None for no photo or a catalogue reference (a URL, a file name)."""
    if not image or not image.startswith(f"{IMAGES_DIR}/") or ".." in Path(image).parts:
        return None
    return settings.resolve(settings.interim_dir) / image


# ---- reading an archive ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Member:
    name: str  # path inside the archive, '/'-separated, without a leading './'
    size: int


def iter_members(archive: Path) -> Iterator[tuple[Member, IO[bytes]]]:
    """Every regular file of a tar (any compression, read as a stream: ``r|*``) or a folder, with a
    handle to read it; each handle is only valid until the next item is asked for."""
    if archive.is_dir():
        for root, dirs, files in os.walk(archive):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                if path.is_file() and not path.is_symlink():
                    with path.open("rb") as handle:
                        yield Member(path.relative_to(archive).as_posix(), path.stat().st_size), handle
        return
    with tarfile.open(archive, "r|*") as tar:
        for info in tar:
            if info.isfile():  # links and devices are never followed
                handle = tar.extractfile(info)
                if handle is not None:
                    yield Member(info.name.removeprefix("./"), info.size), handle


def member_regex(pattern: str) -> re.Pattern[str]:
    """``images/{id}.jpg`` -> a regex whose group ``id`` is the key (no '/' inside it)."""
    head, tail = pattern.split("{id}")
    return re.compile(f"{re.escape(head.removeprefix('./'))}(?P<id>[^/]+?){re.escape(tail)}")


def read_join(path: Path, spec: ImageJoin) -> dict[str, list[str]]:
    """product id -> its photo keys in rank order, from a CSV link table (streamed row by row)."""
    ranked: dict[str, list[tuple[str, int, str]]] = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {spec.product_column, spec.image_column, spec.order_column} - {None, *(reader.fieldnames or [])}
        if missing:
            raise ValueError(f"image join table {path.name} has no column {sorted(missing)[0]!r}")
        for position, row in enumerate(reader):
            product, key = (row.get(spec.product_column) or "").strip(), (row.get(spec.image_column) or "").strip()
            if product and key:
                order = (row.get(spec.order_column) or "") if spec.order_column else ""
                ranked.setdefault(product, []).append((order, position, key))
    return {product: [key for *_, key in sorted(items)] for product, items in ranked.items()}


# ---- resolving and storing a dataset's photos ---------------------------------------------------

@dataclass(slots=True)
class _Photo:
    check: ImageCheck
    path: str | None = None  # relative to interim_dir, once stored
    bytes: int = 0


class ImageResolver:
    """The photos of one dataset for one ingest run.

    ``resolve()`` streams the archive once and stores every good photo a product may use under
    ``staging`` (a folder that becomes ``<interim_dir>/images`` when the run succeeds). Held in
    memory: one small verdict per photo and the join table's keys, never image data. Then
    ``image_for(product_id)`` answers per kept row; ``finish()`` removes stored photos no kept row
    uses and closes the index."""

    def __init__(self, *, dataset: str, spec: DatasetSpec, source: ImageSource, limits: ImageLimits,
                 settings: MLSettings, staging: Path) -> None:
        self.dataset = dataset
        self.archive = spec.resolved_path(settings, source.archive)
        self._join_path = spec.resolved_path(settings, source.join.path) if source.join else None
        self._source = source
        self._limits = limits
        self._folder = staging / dataset
        self._relative = f"{IMAGES_DIR}/{dataset}"
        self._photos: dict[str, _Photo] = {}  # key (product id, or the join table's image key) -> verdict
        self._listing: dict[str, list[str]] | None = None  # join only: product id -> photo keys, ranked
        self._used: set[str] = set()
        self._counts: Counter[str] = Counter()
        self._listed: Counter[int] = Counter()  # photos listed per kept product -> products
        self._index: IO[str] | None = None
        self.members_read = 0
        self.archive_error: str | None = None
        self.seconds = 0.0

    def resolve(self) -> ImageResolver:
        started = time.perf_counter()
        if not self.archive.exists():
            raise FileNotFoundError(f"image archive not found: {self.archive}")
        if self._join_path is not None:
            if not self._join_path.exists():
                raise FileNotFoundError(f"image join table not found: {self._join_path}")
            self._listing = read_join(self._join_path, self._source.join)
        wanted = {key for keys in self._listing.values() for key in keys} if self._listing is not None else None
        pattern = member_regex(self._source.member)
        self._folder.mkdir(parents=True, exist_ok=True)
        try:
            for member, handle in iter_members(self.archive):
                self.members_read += 1
                match = pattern.fullmatch(member.name)
                if match is None:
                    continue
                key = match.group("id")
                if (wanted is not None and key not in wanted) or key in self._photos:
                    continue  # not listed, or a duplicate name: the first copy counts
                self._photos[key] = self._take(key, member, handle)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            # A damaged archive costs the photos after the damage, not the run: those rows go without.
            self.archive_error = _short(exc)
            log.warning("image archive %s unreadable after %d members: %s", self.archive, self.members_read, exc)
        self._index = (self._folder / INDEX_FILE).open("w", encoding="utf-8")
        self.seconds = time.perf_counter() - started
        log.info("checked %d photos of %s in %.1f s (%d archive members)", len(self._photos), self.dataset,
                 self.seconds, self.members_read)
        return self

    def _take(self, key: str, member: Member, handle: IO[bytes]) -> _Photo:
        if member.size > self._limits.max_bytes:  # refused unread: a huge member never enters memory
            why = f"{member.size:,} bytes (limit {self._limits.max_bytes:,})"
            return _Photo(ImageCheck(ImageReason.TOO_LARGE, why))
        data = handle.read()
        check = check_image(data, limits=self._limits)
        if not check.ok:
            return _Photo(check, bytes=len(data))
        digest = hashlib.sha256(data).hexdigest()[:12]
        name = key if _SAFE_NAME.fullmatch(key) else hashlib.sha256(key.encode()).hexdigest()[:24]
        filename = f"{name}-{digest}.{_EXTENSIONS.get(check.format or '', 'img')}"
        (self._folder / filename).write_bytes(data)
        return _Photo(check, f"{self._relative}/{filename}", len(data))

    def image_for(self, product_id: str) -> str | None:
        """The stored photo of a kept product (its path relative to ``interim_dir``), or None; counted."""
        keys = self._listing.get(product_id, []) if self._listing is not None else [product_id]
        found = [(key, photo) for key in keys if (photo := self._photos.get(key)) is not None]
        chosen = next(((key, photo) for key, photo in found if photo.check.ok), None)
        if self._listing is not None:
            self._listed[len(keys)] += 1
        if chosen is not None:
            self._used.add(chosen[0])
            self._counts["with_image"] += 1
            reason, path, photo = None, chosen[1].path, chosen[1]
        else:
            photo = found[0][1] if found else None  # the first listed photo's fault is the row's reason
            reason = photo.check.reason if photo is not None else ImageReason.MISSING
            path = None
            self._counts[str(reason)] += 1
        self._write_index(product_id, path, len(keys) if self._listing is not None else len(found), reason, photo)
        return path

    def _write_index(self, product_id: str, path: str | None, photos: int, reason: ImageReason | None,
                     photo: _Photo | None) -> None:
        if self._index is None:
            raise RuntimeError("ImageResolver.resolve() must run before image_for()")
        check = photo.check if photo is not None else None
        row = {"id": product_id, "image": path, "photos": photos, "reason": str(reason) if reason else None,
               "detail": check.detail if check and reason else None,
               "width": check.width if check else None, "height": check.height if check else None,
               "bytes": photo.bytes if photo else None}
        self._index.write(json.dumps(row, ensure_ascii=False) + "\n")

    def finish(self) -> dict[str, Any]:
        """Remove stored photos no kept row uses; close the index; the summary's ``images`` entry."""
        if self._index is not None:
            self._index.close()
            self._index = None
        unused = 0
        for key, photo in self._photos.items():
            if photo.path is not None and key not in self._used:
                (self._folder / Path(photo.path).name).unlink(missing_ok=True)
                unused += 1
        rejected = {reason: n for reason, n in self._counts.most_common() if reason != "with_image"}
        summary: dict[str, Any] = {
            "archive": str(self.archive),
            "with_image": self._counts["with_image"],
            "without_image": sum(rejected.values()),
            "rejected": rejected,
            "photos_checked": len(self._photos),
            "photos_stored": len(self._used),
            "unused_photos_removed": unused,
            "archive_members_read": self.members_read,
            "archive_error": self.archive_error,
            "folder": self._relative,
        }
        log.info("photos of %s: %d rows with one, %d without %s", self.dataset, summary["with_image"],
                 summary["without_image"], rejected or "")
        if self._listing is not None:
            summary["photos_listed_per_product"] = {str(k): v for k, v in sorted(self._listed.items())}
        return summary

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None
