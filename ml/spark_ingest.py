"""Ingest on Apache Spark (``ingest.engine: spark``): the same readers' row
mapping and the same ``Validator.check``, called on Spark workers through
mapInPandas, and the same three outputs as the pandas engine.

How the source becomes distributable batches:

- amazon2018 (JSON lines): ``spark.read.text`` with line numbers from
  ``zipWithIndex``, repartitioned over the cluster; each line goes through the
  reader's own ``parse_line``. A ``.gz`` file is not splittable, so one task
  reads (decompresses) it whole before the repartition spreads the parsing and
  validation; many files or plain text would spread the read as well.
- csv / parquet / rakuten: the engine's own readers run on the driver (the
  malformed-record-tolerant CSV reader is sequential by nature: a quoted field
  may span lines) and hand pickled chunks to Spark in waves of one chunk per
  core, so the driver holds one wave at a time while workers validate.

Each worker emits one tagged row per record: the Product columns when kept, the
quarantine line when rejected. That union is written once, sorted by source
order, and streamed by the driver row group by row group (bounded memory) into
the single ``products.parquet`` and ``quarantine.jsonl``; counts come from the
same pass, so the summary reconciles exactly as the pandas engine's does.
Outputs land through ``replace_on_success``, the summary last.

Photos (a dataset's ``images:``) are resolved on the driver, as the pandas engine does: the
archive is streamed once (ml/images.py) while the sorted rows are combined, and each kept row's
``image`` is set there, so both engines write the same rows, photos and summary.

Known differences from the pandas engine, all in malformed input: Spark decodes
a JSON line as UTF-8 with replacement, so a line with invalid UTF-8 may parse
here where orjson rejects it there; a last line with no newline gets one (its
bad_json detail may name another column). On a cluster, the catalogue and
``interim_dir`` must be on a filesystem that the driver and executors share.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml.images import ImageResolver
from ml.ingest import IngestOutputs, _summary, dataset_spec, image_resolver
from ml.io import ParquetSink, replace_dir_on_success, replace_on_success, write_json
from ml.params import DatasetSpec, IngestParams, Params
from ml.readers import RawRecord, open_reader
from ml.readers.amazon2018 import parse_line
from ml.schema import PRODUCT_ARROW_SCHEMA, PRODUCT_COLUMNS, Product
from ml.settings import MLSettings
from ml.spark_session import spark_session
from ml.validate import Validator

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

Checker = Callable[[list[RawRecord], list[int]], pd.DataFrame]  # records + their source positions -> tagged rows

# One row per source record: `seq` is its position in the source (row numbers alone
# can repeat: a CSV bad row is numbered by line, a good one by row).
CHECKED_DDL = (
    "seq long, kept boolean, unparsed_price boolean, reason string, quarantine string, "
    "id string, source string, title string, description string, features array<string>, brand string, "
    "price double, image string, label string, label_path array<string>"
)


def ingest_spark(*, settings: MLSettings, params: Params, dataset: str | None = None,
                 source: Path | None = None) -> dict[str, Any]:
    """``ml.ingest.ingest`` on Spark: same inputs, same outputs, same summary."""
    name, spec = dataset_spec(params, dataset, source)
    source = spec.resolved_path(settings)
    if not source.exists():
        raise FileNotFoundError(f"catalogue file not found: {source}")
    out = IngestOutputs.for_settings(settings)
    scratch = settings.resolve(settings.interim_dir) / f".spark-ingest-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    spark = spark_session(settings, app_name=f"productcat-ingest-{name}")
    phases = {"session": time.perf_counter()}  # phase -> when it ended; logged as durations at the end
    log.info("ingesting %s from %s on spark (%s)", name, source, settings.spark_master)
    check = _checker(name=name, spec=spec, rules=params.ingest)
    try:
        unsorted, ordered = scratch / "checked", scratch / "ordered"
        if spec.format == "amazon2018":
            _check_json_lines(spark, source, check).write.parquet(str(unsorted))
        else:
            _check_driver_chunks(spark, spec, settings, params.ingest.chunk_rows, check, unsorted)
        phases["check"] = time.perf_counter()
        checked = spark.read.parquet(str(unsorted))
        checked_rows = checked.count()  # from Parquet footers: what the driver must find after the sort
        # A second, cheap pass puts records back in source order (range partitions, sorted part files).
        checked.orderBy("seq").write.parquet(str(ordered))
        phases["sort"] = time.perf_counter()
        targets = (out.products, out.quarantine, out.summary)
        with (
            replace_on_success(*targets) as (products_tmp, quarantine_tmp, summary_tmp),
            replace_dir_on_success(out.images) as images_tmp,
        ):
            photos = image_resolver(name=name, spec=spec, params=params, settings=settings, staging=images_tmp)
            counts = _combine(ordered, products_tmp, quarantine_tmp, batch_rows=params.ingest.chunk_rows,
                              photos=photos)
            phases["combine"] = time.perf_counter()
            summary = _summary(
                name=name, source=source, out=out, read=counts.read, kept=counts.kept, reasons=counts.reasons,
                labels=counts.labels, unparsed_prices=counts.unparsed_prices, seconds=time.perf_counter() - started,
                images=photos.finish() if photos is not None else None,
            )
            if not summary["reconciles"] or counts.read != checked_rows:  # a code path lost rows: fail loudly
                raise RuntimeError(
                    f"ingest lost rows: checked {checked_rows}, read {counts.read}, kept {counts.kept}, "
                    f"quarantined {summary['quarantined']}"
                )
            write_json(summary_tmp, summary)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info(
        "read %d = kept %d + quarantined %d %s", counts.read, counts.kept, summary["quarantined"],
        dict(counts.reasons) or "",
    )
    ends = [started, *phases.values()]
    durations = {k: round(end - start, 1) for k, start, end in zip(phases, ends, ends[1:], strict=False)}
    log.info("spark ingest phases (s): %s", durations)
    return summary


def _checker(*, name: str, spec: DatasetSpec, rules: IngestParams) -> Checker:
    """The per-batch function workers run: Validator.check on each record, one tagged row out.

    A fresh Validator per batch is cheap (it holds only the rules); its
    ``unparsed_prices`` counter is read per record, so counts add up across workers.
    """

    def check(records: list[RawRecord], seqs: list[int]) -> pd.DataFrame:
        validator = Validator(source=name, spec=spec, rules=rules)
        rows: list[dict[str, Any]] = []
        for seq, record in zip(seqs, records, strict=True):
            before = validator.unparsed_prices
            outcome = validator.check(record)
            row: dict[str, Any] = {"seq": seq, "unparsed_price": validator.unparsed_prices > before}
            if isinstance(outcome, Product):
                row.update(kept=True, reason=None, quarantine=None)
                row.update({column: getattr(outcome, column) for column in PRODUCT_COLUMNS})
            else:
                line = json.dumps(outcome.to_dict(name), ensure_ascii=False)  # as ml.io.append_jsonl writes it
                row.update(kept=False, reason=str(outcome.reason), quarantine=line)
                row.update(dict.fromkeys(PRODUCT_COLUMNS))  # explicit None: a missing key would become NaN
            rows.append(row)
        return pd.DataFrame(rows, columns=_CHECKED_COLUMNS)

    return check


_CHECKED_COLUMNS = [part.split()[0] for part in CHECKED_DDL.split(", ")]


def _check_json_lines(spark: SparkSession, source: Path, check: Checker) -> DataFrame:
    from pyspark.sql import functions as F

    # "\n" only, as Python splits the file: Spark's default also splits on a bare "\r".
    lines = (
        spark.read.option("lineSep", "\n").text(str(source))
        .withColumn("part", F.spark_partition_id())
        .withColumn("id", F.monotonically_increasing_id())  # (partition index << 33) + position in it
    )
    position = F.col("id") - F.shiftleft(F.col("part").cast("long"), 33)
    if lines.rdd.getNumPartitions() == 1:  # a .gz file: one split, the position is the line number
        seq_col = position + 1
    else:  # a splittable file: add the line counts of the splits before this one (a cheap JVM pass)
        counts = sorted(lines.groupBy("part").count().collect())
        offsets, total = {}, 0
        for part, count in counts:
            offsets[part], total = total, total + count
        offset = F.create_map(*(F.lit(v) for pair in offsets.items() for v in pair))[F.col("part")]
        seq_col = offset + position + 1
    # Line numbering stays in the JVM; only the repartitioned lines travel to Python workers.
    frame = lines.select(seq_col.alias("seq"), F.col("value").alias("line"))
    frame = frame.repartition(2 * spark.sparkContext.defaultParallelism)

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            records, seqs = [], []
            for seq, text in zip(batch["seq"].tolist(), batch["line"].tolist(), strict=True):
                line = text.encode("utf-8") + b"\n"  # bytes with newline, exactly as the pandas reader sees it
                if line.strip():
                    records.append(parse_line(seq, line))
                    seqs.append(seq)
            yield check(records, seqs)

    return frame.mapInPandas(run, CHECKED_DDL)


def _check_driver_chunks(
    spark: SparkSession, spec: DatasetSpec, settings: MLSettings, chunk_rows: int,
    check: Checker, target: Path,
) -> None:
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for first, payload in zip(batch["first"].tolist(), batch["payload"].tolist(), strict=True):
                records: list[RawRecord] = pickle.loads(payload)
                yield check(records, list(range(first, first + len(records))))

    chunks = open_reader(spec, settings, chunk_rows)
    wave_size = spark.sparkContext.defaultParallelism
    seq = 1
    wrote = False
    while wave := list(islice(chunks, wave_size)):
        rows = []
        for chunk in wave:
            rows.append((seq, pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)))
            seq += len(chunk)
        frame = spark.createDataFrame(rows, "first long, payload binary").repartition(len(rows))
        frame.mapInPandas(run, CHECKED_DDL).write.mode("append").parquet(str(target))
        wrote = True
    if not wrote:  # an empty catalogue still leaves a (empty) table to sort
        spark.createDataFrame([], CHECKED_DDL).write.parquet(str(target))


class _Counts:
    def __init__(self) -> None:
        self.read = 0
        self.kept = 0
        self.unparsed_prices = 0
        self.reasons: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()


def _combine(ordered: Path, products: Path, quarantine: Path, *, batch_rows: int,
             photos: ImageResolver | None = None) -> _Counts:
    """Stream Spark's sorted part files into one Parquet file and one JSONL file; with ``photos``,
    each kept row's ``image`` becomes its stored photo (or null)."""
    counts = _Counts()
    parts = sorted(ordered.glob("part-*.parquet"))  # range-partitioned: file order is source order
    with ParquetSink(products, PRODUCT_ARROW_SCHEMA) as sink, quarantine.open("w", encoding="utf-8") as bad:
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=batch_rows):
                table = pa.Table.from_batches([batch])
                kept_mask = table.column("kept")
                kept = table.filter(kept_mask).select(list(PRODUCT_COLUMNS)).cast(PRODUCT_ARROW_SCHEMA)
                if photos is not None:
                    images = pa.array([photos.image_for(i) for i in kept.column("id").to_pylist()], pa.string())
                    field = PRODUCT_ARROW_SCHEMA.field("image")
                    kept = kept.set_column(kept.schema.get_field_index("image"), field, images)
                rejected = table.filter(pc.invert(kept_mask))
                sink.write(kept)
                counts.read += table.num_rows
                counts.unparsed_prices += pc.sum(table.column("unparsed_price").cast(pa.int64())).as_py() or 0
                counts.labels.update(label for label in kept.column("label").to_pylist() if label)
                counts.reasons.update(rejected.column("reason").to_pylist())
                for line in rejected.column("quarantine").to_pylist():
                    bad.write(line + "\n")
        counts.kept = sink.rows
    return counts
