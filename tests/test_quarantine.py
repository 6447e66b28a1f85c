"""Every rejected row lands in the quarantine file with its reason; counts reconcile."""

import json

import pyarrow.parquet as pq
import pytest

from ml.ingest import IngestOutputs, ingest
from tests.conftest import write_jsonl_gz

GOOD = {
    "asin": "B0GOOD0001",
    "title": "Stainless Steel Food Steamer",
    "description": ["3 tier stackable steamer"],
    "feature": ["Dishwasher safe"],
    "brand": "Morphy Richards",
    "price": "$20.00",
    "main_cat": "Amazon Home",
    "category": ["Home & Kitchen"],
}

# One hand-made row per quarantine reason, with the reason expected.
BAD_ROWS = [
    ('{"asin": "B0BAD00001", "title": "cut off', "bad_row"),
    ("[1, 2, 3]", "bad_row"),
    ({**GOOD, "asin": ""}, "missing_id"),
    ({**GOOD, "asin": "B0BAD00003", "title": "", "description": []}, "missing_text"),
    ({**GOOD, "asin": "B0BAD00004", "title": "<br>", "description": ["&nbsp;"]}, "missing_text"),
    ({**GOOD, "asin": "B0BAD00005", "main_cat": ""}, "missing_label"),
    ({**GOOD, "asin": "B0BAD00006", "main_cat": "Gift Cards"}, "unknown_label"),
    ({**GOOD, "asin": "B0BAD00007", "title": "x" * 501}, "oversize_text"),
    ({**GOOD, "asin": "B0BAD00008", "description": ["y" * 20_001]}, "oversize_text"),
]


@pytest.fixture
def mixed_file(tmp_path, amazon_rows):
    rows = [GOOD, *amazon_rows[:20], *(row for row, _ in BAD_ROWS)]
    return write_jsonl_gz(tmp_path / "mixed.jsonl.gz", rows)


def test_each_bad_row_is_quarantined_with_its_reason(settings, with_dataset, mixed_file, amazon_rows):
    params = with_dataset(format="amazon2018", path=str(mixed_file), allowed_labels=[
        "Amazon Home", "Tools & Home Improvement", "Appliances",
    ])
    summary = ingest(settings=settings, params=params)
    out = IngestOutputs.for_settings(settings)
    quarantined = [json.loads(line) for line in out.quarantine.open()]
    bad_reasons = [q["reason"] for q in quarantined if q["row"] > 21]
    assert bad_reasons == [reason for _, reason in BAD_ROWS]
    # The quarantine row keeps the original text, so nothing is lost.
    assert quarantined[-1]["raw"].startswith("{") and quarantined[0]["detail"]
    kept = pq.read_table(out.products).num_rows
    assert summary["read"] == 1 + 20 + len(BAD_ROWS)
    assert summary["read"] == summary["kept"] + summary["quarantined"] == kept + len(quarantined)
    assert summary["reconciles"]
    stored = json.loads(out.summary.read_text())
    assert stored["quarantine_reasons"] == summary["quarantine_reasons"]


def test_unparseable_price_is_kept_as_null_and_counted(settings, with_dataset, tmp_path):
    css = ".a-box-inner{background-color:#fff}#hmd2{width:100%}"
    path = write_jsonl_gz(tmp_path / "p.jsonl.gz", [{**GOOD, "price": css}, {**GOOD, "asin": "B2", "price": ""}])
    summary = ingest(settings=settings, params=with_dataset(format="amazon2018", path=str(path)))
    prices = pq.read_table(IngestOutputs.for_settings(settings).products).column("price").to_pylist()
    assert prices == [None, None]
    assert summary["unparsed_prices"] == 1  # the empty one is simply absent, not unparsed
    assert summary["quarantined"] == 0


def test_csv_rows_without_text_or_label_are_quarantined(settings, with_dataset, tmp_path):
    path = tmp_path / "tiny.csv"
    path.write_text(
        "id,productDisplayName,masterCategory,subCategory,articleType\n"
        "1,Puma Men Grey T-shirt,Apparel,Topwear,Tshirts\n"
        "2,,Apparel,Topwear,Tshirts\n"
        "3,Titan Women Silver Watch,Accessories,Watches,\n"
        ",Nameless Watch,Accessories,Watches,Watches\n"
    )
    params = with_dataset(
        format="csv", path=str(path), columns={"id": "id", "title": "productDisplayName"},
        label={"columns": ["masterCategory", "subCategory", "articleType"], "min_depth": 3},
    )
    summary = ingest(settings=settings, params=params)
    assert summary["kept"] == 1
    assert summary["quarantine_reasons"] == {"missing_text": 1, "missing_label": 1, "missing_id": 1}


def test_malformed_csv_line_is_quarantined_not_dropped(settings, with_dataset, tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text(
        "id,productDisplayName,masterCategory\n"
        "1,Puma Men Grey T-shirt,Apparel\n"
        "2,Titan Women Silver Watch,Accessories,an,extra,field\n"
        "3,Nike Running Shoes,Footwear\n"
    )
    params = with_dataset(format="csv", path=str(path), columns={"id": "id", "title": "productDisplayName"},
                          label={"column": "masterCategory"})
    summary = ingest(settings=settings, params=params)
    assert summary["read"] == 3 and summary["kept"] == 2
    assert summary["quarantine_reasons"] == {"bad_row": 1}
    quarantined = [json.loads(line) for line in IngestOutputs.for_settings(settings).quarantine.open()]
    assert "Titan Women Silver Watch" in quarantined[0]["raw"]


def test_json_list_image_cell_gives_its_first_url(settings, with_dataset, tmp_path):
    path = tmp_path / "img.csv"
    path.write_text('id,name,cat,image\n1,Shorts,Clothing,"[""http://a/1.jpeg"", ""http://a/2.jpeg""]"\n')
    params = with_dataset(format="csv", path=str(path), columns={"id": "id", "title": "name", "image": "image"},
                          label={"column": "cat"})
    ingest(settings=settings, params=params)
    image = pq.read_table(IngestOutputs.for_settings(settings).products).column("image").to_pylist()
    assert image == ["http://a/1.jpeg"]
