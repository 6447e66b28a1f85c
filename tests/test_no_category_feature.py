"""The Amazon `category` list must never become an input: main_cat is derived from it."""

import dataclasses

import pyarrow.parquet as pq

from ml.ingest import IngestOutputs, ingest
from ml.readers.amazon2018 import map_amazon_row
from ml.schema import INPUT_FIELDS, PRODUCT_COLUMNS, Product
from tests.conftest import write_jsonl_gz


def test_product_schema_has_no_category_field():
    names = {f.name for f in dataclasses.fields(Product)}
    assert not any("categor" in name for name in names | set(PRODUCT_COLUMNS) | set(INPUT_FIELDS))


def test_mapped_amazon_row_never_carries_category(amazon_rows):
    for row in amazon_rows:
        fields = map_amazon_row(row)
        text = repr({k: v for k, v in fields.items() if k != "label_path"})
        # The distinctive sub-category names of the row appear nowhere in its inputs
        # unless they are also in the title/description/features themselves.
        own_text = repr([row.get(k) for k in ("title", "description", "feature", "brand")])
        for segment in row["category"][1:]:
            if segment not in own_text:
                assert segment not in text


def test_changing_category_changes_no_ingested_value(settings, with_dataset, tmp_path, amazon_rows):
    scrambled = [{**row, "category": ["Zzz Poison Category", "Should Never Appear"]} for row in amazon_rows]
    outputs = []
    for name, rows in (("original", amazon_rows), ("scrambled", scrambled)):
        path = write_jsonl_gz(tmp_path / f"{name}.jsonl.gz", rows)
        params = with_dataset(format="amazon2018", path=str(path))
        ingest(settings=settings, params=params)
        outputs.append(pq.read_table(IngestOutputs.for_settings(settings).products).to_pylist())
    assert outputs[0] == outputs[1]
    assert "Zzz Poison Category" not in repr(outputs[1])
