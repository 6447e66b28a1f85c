"""Dedupe and the stable, hash-based split."""

import json
import shutil

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from ml.ingest import IngestOutputs, ingest
from ml.io import ParquetSink
from ml.schema import PRODUCT_ARROW_SCHEMA, Product, products_to_table
from ml.split import SPLITS, SplitOutputs, assign_split, split


def _write_products(settings, products):
    path = IngestOutputs.for_settings(settings).products
    with ParquetSink(path, PRODUCT_ARROW_SCHEMA) as sink:
        sink.write(products_to_table(products))


def _split_of_each_id(settings):
    out = SplitOutputs.for_settings(settings)
    return {
        row_id: name
        for name in SPLITS
        for row_id in pq.read_table(out.split_file(name), columns=["id"]).column("id").to_pylist()
    }


def _product(product_id, title, label="Shirts"):
    return Product(id=product_id, source="t", title=title, label=label, label_path=[label])


def test_dedupes_exact_ids_and_normalised_title_with_label(settings, params):
    _write_products(settings, [
        _product("1", "Puma Men Grey T-shirt"),
        _product("1", "Another title, same id"),
        _product("2", "puma men grey t shirt!"),  # same normalised title and label as id 1
        _product("3", "Puma Men Grey T-shirt", label="Tshirts"),  # same title, other label: kept
        _product("4", "Titan Women Silver Watch", label="Watches"),
    ])
    summary = split(settings=settings, params=params)
    assert summary["duplicate_reasons"] == {"duplicate_id": 1, "duplicate_title_label": 1}
    assert summary["read"] == summary["kept"] + summary["duplicates"] == 5
    assert set(_split_of_each_id(settings)) == {"1", "3", "4"}
    dups = [json.loads(line) for line in SplitOutputs.for_settings(settings).duplicates.open()]
    assert {(d["id"], d["kept_id"]) for d in dups} == {("1", "1"), ("2", "1")}


def test_split_on_real_sample_has_expected_shares_and_class_counts(settings, params):
    ingest(settings=settings, params=params, dataset="fashion-sample")
    summary = split(settings=settings, params=params)
    assert summary["reconciles"]
    assert abs(summary["fractions"]["test"] - params.split.test_fraction) < 0.03
    assert abs(summary["fractions"]["validation"] - params.split.validation_fraction) < 0.03
    for name in SPLITS:
        assert sum(summary["class_counts"][name].values()) == summary["rows"][name]
    stored = json.loads(SplitOutputs.for_settings(settings).summary.read_text())
    assert stored["test_fingerprint"] == summary["test_fingerprint"]


def test_split_is_deterministic(settings, params):
    ingest(settings=settings, params=params, dataset="fashion-sample")
    first = split(settings=settings, params=params)
    assignments = _split_of_each_id(settings)
    again = split(settings=settings, params=params)
    assert again["test_fingerprint"] == first["test_fingerprint"]
    assert _split_of_each_id(settings) == assignments


ids = st.text(alphabet="ABCDEFGHIJ0123456789", min_size=1, max_size=8)
rows = st.lists(st.tuples(ids, st.sampled_from(["red shirt", "blue jeans", "watch", "", "bag"]),
                          st.sampled_from(["A", "B", "C"])), min_size=1, max_size=40)


@hyp_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=rows, appended=rows)
def test_appending_rows_never_moves_an_existing_product(settings, params, base, appended):
    shutil.rmtree(settings.processed_dir, ignore_errors=True)
    to_products = lambda items: [_product(i, t or None, label) for i, t, label in items]  # noqa: E731
    _write_products(settings, to_products(base))
    split(settings=settings, params=params)
    before = _split_of_each_id(settings)
    _write_products(settings, to_products(base + appended))
    split(settings=settings, params=params)
    after = _split_of_each_id(settings)
    for product_id, name in before.items():
        assert after[product_id] == name
        assert assign_split(product_id, params.split) == name


def test_id_of_a_title_duplicate_is_remembered(settings, params):
    _write_products(settings, [
        _product("A", "Red Shirt"),
        _product("B", "red shirt"),  # title duplicate of A: dropped
        _product("B", "Something else entirely"),  # same id as the dropped row: still a duplicate
    ])
    summary = split(settings=settings, params=params)
    assert summary["duplicate_reasons"] == {"duplicate_title_label": 1, "duplicate_id": 1}
    assert set(_split_of_each_id(settings)) == {"A"}
