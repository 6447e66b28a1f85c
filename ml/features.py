"""What a model reads: product records turned into one text, the same way at
training time and at serving time.

Field order is fixed and documented: title first, so when a transformer
truncates to ``max_length`` tokens it is the description that is cut, never
the title.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ml.text import clean_list, clean_text, parse_price

# Bump when product_text changes: a model records the version it was trained with.
PREPROCESSING_VERSION = "1"
TEXT_ORDER = ("title", "brand", "price", "features", "description")
SEP = " | "


def clean_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """API/batch input (raw strings, lists, "$12.99") -> the cleaned fields ingest produces."""
    return {
        "title": clean_text(record.get("title")),
        "brand": clean_text(record.get("brand")),
        "price": parse_price(record.get("price")),
        "features": clean_list(record.get("features")),
        "description": clean_text(record.get("description")),
    }


def product_text(record: Mapping[str, Any]) -> str:
    """One string in TEXT_ORDER; empty fields are skipped, not marked."""
    fields = clean_record(record)
    parts = [
        fields["title"],
        f"brand: {fields['brand']}" if fields["brand"] else None,
        f"price: {fields['price']:.2f}" if fields["price"] is not None else None,
        "; ".join(fields["features"]) or None,
        fields["description"],
    ]
    return SEP.join(p for p in parts if p)


def product_texts(records: Iterable[Mapping[str, Any]]) -> list[str]:
    return [product_text(r) for r in records]
