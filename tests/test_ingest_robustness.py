"""Hostile catalogue input: ingest never aborts on a bad row, never stringifies a
wrong type, and a failed run never leaves outputs that disagree with its summary."""

import json

import pyarrow.parquet as pq
import pytest

import ml.ingest
from ml.ingest import IngestOutputs, ingest
from tests.conftest import write_jsonl_gz

HEADER = "id,productDisplayName,masterCategory\n"
CSV_SPEC = {"format": "csv", "columns": {"id": "id", "title": "productDisplayName"},
            "label": {"column": "masterCategory"}}
GOOD = {"asin": "B0GOOD0001", "title": "Stainless Steel Food Steamer", "price": "$20.00", "main_cat": "Amazon Home"}


def _outputs(settings):
    out = IngestOutputs.for_settings(settings)
    products = pq.read_table(out.products).to_pylist()
    quarantined = [json.loads(line) for line in out.quarantine.open()]
    return out, products, quarantined


@pytest.mark.parametrize(
    "after",
    [
        "5,Adidas Cap,Accessories\n",  # the stray quote is the file's last: it would run to the end of the file
        '5,"Nike ""Air"" Shoes",Footwear\n',  # a later quote closes it: the lines in between would be joined
    ],
)
def test_unterminated_quote_costs_only_its_line(settings, with_dataset, tmp_path, after):
    path = tmp_path / "stray.csv"
    path.write_text(
        HEADER
        + "1,Puma Men Grey T-shirt,Apparel\n"
        + '2,"Titan, Women Silver Watch",Accessories\n'
        + '3,"Fastrack Black Watch,Accessories\n'  # opens a quote it never closes
        + "4,Nike Running Shoes,Footwear\n"
        + after
    )
    summary = ingest(settings=settings, params=with_dataset(path=str(path), **CSV_SPEC))
    _, products, quarantined = _outputs(settings)
    assert [p["id"] for p in products] == ["1", "2", "4", "5"]
    assert products[1]["title"] == "Titan, Women Silver Watch"
    [bad] = quarantined
    assert bad["reason"] == "bad_row" and bad["row"] == 4  # physical line: the header is line 1
    assert bad["detail"].startswith("bad_row: line 4: ") and "quote" in bad["detail"]
    assert bad["raw"] == '3,"Fastrack Black Watch,Accessories'
    assert summary["read"] == 5 == summary["kept"] + summary["quarantined"] and summary["reconciles"]


def test_runaway_quote_is_cut_at_the_record_limit(settings, with_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr("ml.readers.csv_records.RECORD_CHAR_LIMIT", 200)
    path = tmp_path / "runaway.csv"
    rows = "".join(f"{i},Product number {i},Apparel\n" for i in range(2, 40))
    path.write_text(HEADER + '1,"Never closed,Apparel\n' + rows + "40," + "x" * 500 + ",Apparel\n")
    summary = ingest(settings=settings, params=with_dataset(path=str(path), **CSV_SPEC))
    _, products, quarantined = _outputs(settings)
    assert [q["detail"] for q in quarantined] == [
        "bad_row: line 2: a quoted field runs past 200 characters (unterminated quote?)",
        "bad_row: line 41: a line longer than 200 characters",
    ]
    assert len(products) == 38 and summary["read"] == 40 and summary["reconciles"]


def test_csv_bytes_that_are_not_utf8_or_are_nul_do_not_stop_the_run(settings, with_dataset, tmp_path):
    path = tmp_path / "bytes.csv"
    rows = b"1,Puma\xff Grey\x00 T-shirt,Apparel\n2,Nike Shoes,Footwear\n"
    path.write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + rows)
    summary = ingest(settings=settings, params=with_dataset(path=str(path), **CSV_SPEC))
    _, products, _ = _outputs(settings)
    assert [p["title"] for p in products] == ["Puma\ufffd Grey T-shirt", "Nike Shoes"]  # BOM dropped from "id"
    assert summary["read"] == summary["kept"] == 2


def test_failed_run_leaves_previous_outputs_untouched(settings, with_dataset, tmp_path, monkeypatch):
    first = write_jsonl_gz(tmp_path / "first.jsonl.gz", [GOOD])
    params = with_dataset(format="amazon2018", path=str(first))
    ingest(settings=settings, params=params)
    out = IngestOutputs.for_settings(settings)
    before = {path: path.read_bytes() for path in (out.products, out.quarantine, out.summary)}

    real_reader = ml.ingest.open_reader

    def failing_reader(*args, **kwargs):
        chunks = real_reader(*args, **kwargs)
        yield next(chunks)
        raise OSError("disk went away")

    monkeypatch.setattr(ml.ingest, "open_reader", failing_reader)
    second = write_jsonl_gz(tmp_path / "second.jsonl.gz", [{**GOOD, "asin": f"B{i}"} for i in range(5)])
    with pytest.raises(OSError, match="disk went away"):
        ingest(settings=settings, params=with_dataset(format="amazon2018", path=str(second)))
    assert {path: path.read_bytes() for path in before} == before
    folders = {out.products.parent, out.summary.parent}
    assert sorted(p.name for folder in folders for p in folder.iterdir()) == sorted(p.name for p in before)


def test_wrong_json_types_are_quarantined_not_stringified(settings, with_dataset, tmp_path):
    rows = [
        ({**GOOD, "asin": "B1", "title": {"en": "Steamer"}}, "title is an object, expected a string"),
        ({**GOOD, "asin": "B2", "title": ["Steamer"]}, "title is a list, expected a string"),
        ({**GOOD, "asin": "B3", "title": 42}, "title is a number, expected a string"),
        ({**GOOD, "asin": {"id": "B4"}}, "id is an object, expected a string or an integer"),
        ({**GOOD, "asin": ["B5"]}, "id is a list, expected a string or an integer"),
        ({**GOOD, "asin": "B6", "feature": ["ok", {"x": 1}]}, "features[1] is an object, expected a string"),
        ({**GOOD, "asin": "B7", "price": [5]}, "price is a list, expected a string or a number"),
        ({**GOOD, "asin": "B8", "main_cat": ["Home"]}, "label_path[0] is a list, expected a string or an integer"),
    ]
    path = write_jsonl_gz(tmp_path / "types.jsonl.gz", [GOOD] + [row for row, _ in rows])
    summary = ingest(settings=settings, params=with_dataset(format="amazon2018", path=str(path)))
    _, products, quarantined = _outputs(settings)
    assert [p["id"] for p in products] == ["B0GOOD0001"]
    assert [(q["reason"], q["detail"]) for q in quarantined] == [("bad_type", detail) for _, detail in rows]
    assert summary["quarantine_reasons"] == {"bad_type": len(rows)} and summary["reconciles"]


def test_parquet_values_keep_their_type_until_validated(settings, with_dataset, tmp_path):
    import pyarrow as pa

    path = tmp_path / "typed.parquet"
    pq.write_table(pa.table({"id": [1, 2], "name": ["Grey Shirt", "Silver Watch"], "code": [10, 20],
                             "brand": [None, ["Titan"]]}), path)
    params = with_dataset(format="parquet", path=str(path), columns={"id": "id", "title": "name", "brand": "brand"},
                          label={"column": "code"})
    summary = ingest(settings=settings, params=params)
    _, products, quarantined = _outputs(settings)
    assert [(p["id"], p["label"]) for p in products] == [("1", "10")]  # integer id and label code are read as such
    assert [(q["reason"], q["detail"]) for q in quarantined] == [("bad_type", "brand is a list, expected a string")]
    assert summary["reconciles"]


def test_control_characters_stripped_from_text_and_refused_in_ids(settings, with_dataset, tmp_path):
    rows = [
        {**GOOD, "title": "Steel\x00 Food\x1b Steamer\x7f", "description": ["Three\x07 tiers\ttall"]},
        {**GOOD, "asin": "B0GOOD\x000002"},
    ]
    path = write_jsonl_gz(tmp_path / "ctl.jsonl.gz", rows)
    summary = ingest(settings=settings, params=with_dataset(format="amazon2018", path=str(path)))
    _, products, quarantined = _outputs(settings)
    assert [(p["title"], p["description"]) for p in products] == [("Steel Food Steamer", "Three tiers tall")]
    assert [(q["reason"], q["detail"]) for q in quarantined] == [("bad_id", "id holds control character U+0000")]
    assert summary["reconciles"]


def test_negative_price_is_kept_null_and_counted_unparsed(settings, with_dataset, tmp_path):
    prices = ["-$5.00", "$-5", "\u22125", -5]
    rows = [{**GOOD, "asin": f"B{i}", "price": price} for i, price in enumerate(prices)]
    path = write_jsonl_gz(tmp_path / "neg.jsonl.gz", rows)
    summary = ingest(settings=settings, params=with_dataset(format="amazon2018", path=str(path)))
    _, products, _ = _outputs(settings)
    assert [p["price"] for p in products] == [None] * len(prices)
    assert summary["unparsed_prices"] == len(prices) and summary["quarantined"] == 0


def test_rakuten_unterminated_quote_keeps_the_other_rows(settings, with_dataset, tmp_path):
    texts, labels = tmp_path / "x.csv", tmp_path / "y.csv"
    texts.write_text(
        ",designation,description,productid,imageid\n"
        "0,Notizbuch,nc,11,21\n"
        '1,"Olivia Notizbuch,nc,12,22\n'
        "2,Journal des arts,,13,23\n"
    )
    labels.write_text(",prdtypecode\n0,10\n1,2280\n2,50\n")
    summary = ingest(settings=settings, params=with_dataset(format="rakuten", path=str(texts), labels_path=str(labels)))
    _, products, quarantined = _outputs(settings)
    assert [(p["id"], p["label"]) for p in products] == [("11", "10"), ("13", "50")]
    assert [q["row"] for q in quarantined] == [3] and summary["read"] == 3 and summary["reconciles"]


def test_failed_split_leaves_previous_outputs_untouched(settings, with_dataset, tmp_path, monkeypatch):
    import ml.split
    from ml.split import SplitOutputs, split

    rows = [{**GOOD, "asin": f"B{i}", "title": f"Steamer model {i}"} for i in range(30)]
    params = with_dataset(format="amazon2018", path=str(write_jsonl_gz(tmp_path / "s.jsonl.gz", rows)))
    ingest(settings=settings, params=params)
    split(settings=settings, params=params)
    out = SplitOutputs.for_settings(settings)
    files = [out.split_file(s) for s in ml.split.SPLITS] + [out.duplicates, out.summary]
    before = {path: path.read_bytes() for path in files}

    def broken(*args, **kwargs):
        raise RuntimeError("split crashed")

    monkeypatch.setattr(ml.split, "assign_split", broken)
    with pytest.raises(RuntimeError, match="split crashed"):
        split(settings=settings, params=params)
    assert {path: path.read_bytes() for path in files} == before
    assert not [p for folder in {out.folder, out.summary.parent} for p in folder.iterdir() if p.suffix == ".tmp"]
