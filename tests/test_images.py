"""Product photos at ingest: each bad photo is counted by its reason and its row keeps its text;
good photos are found by member pattern or join table, stored once, and the archive is streamed."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import tracemalloc
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from ml.images import INDEX_FILE, ImageReason, check_image, stored_path
from ml.ingest import IngestOutputs, ingest
from ml.params import ImageLimits
from tests.conftest import SAMPLE_DIR

LIMITS = ImageLimits()
CSV_SPEC = {"format": "csv", "columns": {"id": "id", "title": "title"}, "label": {"column": "label"}}


def _photo(fmt: str = "JPEG", size: tuple[int, int] = (60, 80), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds almost no data: decoding it would allocate."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _real_jpeg() -> bytes:
    with tarfile.open(SAMPLE_DIR / "fashion_images.tar.gz") as tar:
        member = next(m for m in tar if m.isfile())
        return tar.extractfile(member).read()  # type: ignore[union-attr]


def _bad_checksum_png() -> bytes:
    data = bytearray(_photo("PNG", (32, 32)))
    data[data.index(b"IDAT") + 6] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("zero bytes", lambda: b"", ImageReason.EMPTY),
        ("a text file", lambda: b"id,title\n1,not a photo\n", ImageReason.NOT_AN_IMAGE),
        ("HTML error page", lambda: b"<html><body>404</body></html>", ImageReason.NOT_AN_IMAGE),
        ("a truncated real JPEG", lambda: _real_jpeg()[: len(_real_jpeg()) // 2], ImageReason.TRUNCATED),
        ("JPEG header cut early", lambda: _real_jpeg()[:200], ImageReason.TRUNCATED),
        ("PNG with a broken checksum", _bad_checksum_png, ImageReason.CORRUPT),
        ("1x1 pixel", lambda: _photo("PNG", (1, 1)), ImageReason.TOO_SMALL),
        ("6000x6000 header (over max_pixels)", lambda: _png_header(6000, 6000), ImageReason.TOO_LARGE),
        ("100000x100000 header (Pillow's bomb guard)", lambda: _png_header(100_000, 100_000), ImageReason.TOO_LARGE),
    ],
)
def test_each_bad_photo_has_its_reason(name, make, reason):
    tracemalloc.start()
    try:
        check = check_image(make(), limits=LIMITS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert check.reason is reason, f"{name}: {check}"
    assert check.detail and len(check.detail) < 200
    assert peak < 5_000_000, f"{name}: {peak:,} bytes allocated (a huge header must not be decoded)"


def test_good_photos_pass_whatever_their_extension():
    for fmt in ("JPEG", "PNG", "WEBP"):
        check = check_image(_photo(fmt), limits=LIMITS)
        assert check.ok and (check.format, check.width, check.height) == (fmt, 60, 80)
    assert check_image(_real_jpeg(), limits=LIMITS).ok
    tight = ImageLimits(max_bytes=100)
    assert check_image(_real_jpeg(), limits=tight).reason is ImageReason.TOO_LARGE


def _write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _catalogue(path: Path, ids: list[str]) -> Path:
    path.write_text("id,title,label\n" + "".join(f"{i},Product {i},Shoes\n" for i in ids))
    return path


def _rows(settings) -> dict[str, dict]:
    return {row["id"]: row for row in pq.read_table(IngestOutputs.for_settings(settings).products).to_pylist()}


@pytest.mark.parametrize("as_folder", [False, True])
def test_member_pattern_resolves_checks_and_stores(settings, with_dataset, tmp_path, as_folder):
    members = {
        "images/1.jpg": _photo(),
        "images/2.jpg": _photo("PNG"),  # a PNG under a .jpg name is still a photo
        "images/3.jpg": b"not a photo",
        "images/4.jpg": b"",
        "images/5.jpg": _photo("PNG", (1, 1)),
        "images/99.jpg": _photo(),  # no such product
        "thumbs/6.jpg": _photo(),  # outside the pattern
    }
    if as_folder:
        archive = tmp_path / "photos"
        for name, data in members.items():
            (archive / name).parent.mkdir(parents=True, exist_ok=True)
            (archive / name).write_bytes(data)
    else:
        archive = _write_tar(tmp_path / "photos.tar.gz", members)
    catalogue = _catalogue(tmp_path / "items.csv", ["1", "2", "3", "4", "5", "6"])
    params = with_dataset(path=str(catalogue), images={"archive": str(archive), "member": "images/{id}.jpg"},
                          **CSV_SPEC)
    summary = ingest(settings=settings, params=params)

    assert summary["kept"] == 6 and summary["quarantined"] == 0  # a bad photo never costs its row
    images = summary["images"]
    assert (images["with_image"], images["without_image"]) == (2, 4)
    assert images["rejected"] == {"not_an_image": 1, "empty": 1, "too_small": 1, "missing": 1}
    assert images["unused_photos_removed"] == 1  # 99.jpg belongs to no kept row
    rows = _rows(settings)
    assert all(rows[i]["title"] == f"Product {i}" for i in rows)
    assert [i for i in rows if rows[i]["image"]] == ["1", "2"]
    assert rows["2"]["image"].endswith(".png")
    assert stored_path(settings, "https://example.com/images/1.jpg") is None  # a catalogue reference: no file
    for i in ("1", "2"):
        path = stored_path(settings, rows[i]["image"])
        assert path is not None and path.read_bytes() == members[f"images/{i}.jpg"]
    folder = IngestOutputs.for_settings(settings).images / "under-test"
    assert sorted(p.name for p in folder.iterdir() if p.name != INDEX_FILE) == sorted(
        Path(rows[i]["image"]).name for i in ("1", "2"))
    index = {row["id"]: row for row in map(json.loads, (folder / INDEX_FILE).open())}
    assert index["3"]["reason"] == "not_an_image" and index["1"]["width"] == 60

    # The next run replaces the folder: no photo of an earlier dataset stays behind.
    plain = with_dataset(path=str(catalogue), **CSV_SPEC)
    assert ingest(settings=settings, params=plain)["images"] is None
    assert not IngestOutputs.for_settings(settings).images.exists()


def test_join_table_keeps_the_first_good_photo_and_counts_them(settings, with_dataset, tmp_path):
    archive = _write_tar(tmp_path / "photos.tar", {
        "images/a.jpg": b"\xff\xd8\xff broken",  # P1's first photo is bad: its second is kept
        "images/b.jpg": _photo(colour=(0, 0, 255)),
        "images/c.jpg": _photo(colour=(0, 255, 0)),
        "images/d.jpg": _photo(),  # P2's later photo, never needed
        "images/e.jpg": b"",  # P4's only photo
    })
    table = tmp_path / "links.csv.gz"
    with gzip.open(table, "wt") as handle:
        handle.write("id,product_id,rank\nd,P2,2\nb,P1,2\na,P1,1\nc,P2,1\nz,P3,1\ne,P4,1\n")
    catalogue = _catalogue(tmp_path / "items.csv", ["P1", "P2", "P3", "P4", "P5"])
    join = {"path": str(table), "product_column": "product_id", "image_column": "id", "order_column": "rank"}
    params = with_dataset(path=str(catalogue), images={"archive": str(archive), "join": join}, **CSV_SPEC)
    images = ingest(settings=settings, params=params)["images"]

    rows = _rows(settings)
    assert rows["P1"]["image"].startswith("images/under-test/b-")
    assert rows["P2"]["image"].startswith("images/under-test/c-")
    assert rows["P3"]["image"] is None and rows["P4"]["image"] is None and rows["P5"]["image"] is None
    assert images["rejected"] == {"missing": 2, "empty": 1}  # P3: listed, not in the archive; P5: not listed
    assert images["photos_listed_per_product"] == {"0": 1, "1": 2, "2": 2}
    assert images["photos_stored"] == 2 and images["unused_photos_removed"] == 1  # d


def test_archive_is_streamed_one_photo_at_a_time(settings, with_dataset, tmp_path):
    """60 members of 200 KB (12 MB): resolving them holds about one, never the archive or a list of photos."""
    import random

    rng = random.Random(0)
    members = {f"images/{i}.jpg": rng.randbytes(200_000) for i in range(60)}
    archive = _write_tar(tmp_path / "big.tar", members)
    del members
    catalogue = _catalogue(tmp_path / "items.csv", [str(i) for i in range(60)])
    params = with_dataset(path=str(catalogue), images={"archive": str(archive)}, **CSV_SPEC)
    tracemalloc.start()
    try:
        summary = ingest(settings=settings, params=params)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary["images"]["rejected"] == {"not_an_image": 60}
    assert peak < 4_000_000, f"peak {peak:,} bytes for a 12 MB archive"


def test_a_damaged_archive_costs_its_later_photos_not_the_run(settings, with_dataset, tmp_path):
    whole = _write_tar(tmp_path / "whole.tar.gz", {f"images/{i}.jpg": _photo() for i in range(1, 4)})
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    catalogue = _catalogue(tmp_path / "items.csv", ["1", "2", "3"])
    params = with_dataset(path=str(catalogue), images={"archive": str(cut)}, **CSV_SPEC)
    summary = ingest(settings=settings, params=params)
    assert summary["kept"] == 3 and summary["images"]["archive_error"]
    assert summary["images"]["with_image"] + summary["images"]["without_image"] == 3


def test_fashion_sample_ingests_with_its_photos(settings, params):
    summary = ingest(settings=settings, params=params, dataset="fashion-sample")
    images = summary["images"]
    assert images["with_image"] == 1000 and images["photos_stored"] == 1000
    assert images["with_image"] + images["without_image"] == summary["kept"]
    assert set(images["rejected"]) == {"missing"}  # the sample bundles photos for every 5th row only
    rows = pq.read_table(IngestOutputs.for_settings(settings).products, columns=["id", "image"]).to_pylist()
    stored = [row for row in rows if row["image"]]
    assert len(stored) == 1000
    for row in stored[::100]:
        path = stored_path(settings, row["image"])
        assert path is not None and path.name.startswith(f"{row['id']}-")
        with Image.open(path) as image:
            assert image.size == (60, 80)
