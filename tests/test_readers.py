"""Each reader on real rows of its catalogue (the bundled sample)."""

import json

import pandas as pd
import pyarrow.parquet as pq

from ml.ingest import IngestOutputs, ingest
from ml.readers import open_reader
from tests.conftest import SAMPLE_DIR


def _ingest_rows(settings, params, dataset):
    summary = ingest(settings=settings, params=params, dataset=dataset)
    rows = pq.read_table(IngestOutputs.for_settings(settings).products).to_pylist()
    return summary, {row["id"]: row for row in rows}


def test_amazon2018_rows_map_onto_product(settings, params):
    summary, rows = _ingest_rows(settings, params, "amazon2018-sample")
    holmes = rows["B00006IV17"]
    assert holmes["title"] == 'Holmes "A" Humidifier Filter, HWF62'  # &quot; unescaped
    assert holmes["price"] == 11.89 and holmes["label"] == "Amazon Home"
    protec = rows["B000056J8D"]
    assert "<br>" not in protec["description"] and "DynaFilter\u2122" in protec["description"]
    # "Appliances" is not one of the format's 23 main_cat classes: quarantined, with the label named.
    quarantined = [json.loads(line) for line in IngestOutputs.for_settings(settings).quarantine.open()]
    tupperware = next(q for q in quarantined if '"7301113188"' in q["raw"])
    assert tupperware["reason"] == "unknown_label" and "Appliances" in tupperware["detail"]
    # Labels with HTML entities are normalised before they are counted.
    assert "Tools & Home Improvement" in summary["label_counts"]
    assert not any("&amp;" in label for label in summary["label_counts"])
    assert all(row["source"] == "amazon2018-sample" for row in rows.values())


def test_amazon2018_prices_and_features(settings, params):
    _, rows = _ingest_rows(settings, params, "amazon2018-sample")
    priced = [row["price"] for row in rows.values() if row["price"] is not None]
    assert priced and all(isinstance(p, float) and p > 0 for p in priced)
    assert any(row["features"] for row in rows.values())


def test_fashion_label_is_a_path_with_articletype_leaf(settings, params):
    summary, rows = _ingest_rows(settings, params, "fashion-sample")
    shirt = rows["15970"]
    assert shirt["title"] == "Turtle Check Men Navy Blue Shirt"
    assert shirt["label_path"] == ["Apparel", "Topwear", "Shirts"]
    assert shirt["label"] == "Shirts"
    assert "gender: Men" in shirt["features"]
    assert summary["classes"] > 50


def test_rakuten_text_and_labels_join_on_row_index(settings, params):
    summary, rows = _ingest_rows(settings, params, "rakuten-sample")
    labels = pd.read_csv(SAMPLE_DIR / "rakuten_y.csv", dtype=str).set_index("Unnamed: 0")["prdtypecode"]
    texts = pd.read_csv(SAMPLE_DIR / "rakuten_x.csv", dtype=str, keep_default_na=False)
    for _, text in texts.head(50).iterrows():
        row = rows[text["productid"]]
        assert row["label"] == labels[text["Unnamed: 0"]]
        assert row["image"] == f"image_{text['imageid']}_product_{text['productid']}.jpg"
    assert rows["3804725264"]["label"] == "10"  # first real row
    assert summary["read"] == len(texts)


def test_marketplace_root_category_and_location_stripped(settings, params):
    _, rows = _ingest_rows(settings, params, "marketplace-sample")
    mirror = rows["243809c0-9cfc-4486-ad12-3b7a16605ba9"]
    assert mirror["title"] == "Mirror wall art"
    assert "Posted by" not in mirror["description"]
    assert mirror["label"] == "Home & Garden"
    assert mirror["label_path"] == ["Home & Garden"]
    assert mirror["price"] == 5.0
    assert len({row["label"] for row in rows.values()}) == 13


def test_flipkart_tree_and_unlabelled_rows(settings, params):
    summary, rows = _ingest_rows(settings, params, "flipkart-sample")
    shorts = rows["c2d766ca982eca8304150849735ffef9"]
    assert shorts["label"] == "Clothing"
    assert shorts["price"] == 999.0
    # Rows whose "tree" is only the product name are quarantined, not guessed.
    assert summary["quarantine_reasons"].get("missing_label", 0) > 0


def test_amazon_in_id_from_link_and_rupee_price(settings, params):
    _, rows = _ingest_rows(settings, params, "amazon-in-sample")
    assert all(len(product_id) == 10 for product_id in rows)
    assert any(row["price"] and row["price"] > 1000 for row in rows.values())


def test_reader_chunks_respect_chunk_size(settings, params):
    _, spec = params.dataset("fashion-sample")
    sizes = [len(chunk) for chunk in open_reader(spec, settings, chunk_rows=700)]
    assert max(sizes) <= 700 and sum(sizes) == 5000
