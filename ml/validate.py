"""Clean one raw record and decide: a Product, or a quarantined row with its reason."""

from __future__ import annotations

import html
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ml.params import DatasetSpec, IngestParams
from ml.readers.base import RawRecord
from ml.schema import Product
from ml.text import clean_list, clean_text, parse_price


class Reason(StrEnum):
    BAD_ROW = "bad_row"  # the line did not parse (bad JSON, broken CSV row)
    MISSING_ID = "missing_id"
    MISSING_TEXT = "missing_text"  # neither title nor description
    MISSING_LABEL = "missing_label"
    UNKNOWN_LABEL = "unknown_label"  # not in the dataset's closed label set
    OVERSIZE_TEXT = "oversize_text"


@dataclass(slots=True)
class Rejection:
    row: int
    reason: Reason
    detail: str
    raw: str

    def to_dict(self, source: str) -> dict[str, Any]:
        return {"source": source, "row": self.row, "reason": str(self.reason), "detail": self.detail, "raw": self.raw}


def _clean_label(value: str) -> str | None:
    # Labels carry HTML entities in real feeds ("Tools &amp; Home Improvement").
    return clean_text(html.unescape(value))


class Validator:
    """Holds the per-dataset rules so each record is checked without re-reading params."""

    def __init__(self, *, source: str, spec: DatasetSpec, rules: IngestParams) -> None:
        self.source = source
        self._rules = rules
        self._allowed = {_clean_label(v) for v in spec.allowed_labels} if spec.allowed_labels else None
        label_spec = spec.label
        self._level = label_spec.level if label_spec else -1
        self._min_depth = label_spec.min_depth if label_spec else 1
        self.unparsed_prices = 0  # price present but not a price: kept as null, counted

    def _oversize(self, title: str | None, description: str | None, features: list[str]) -> str | None:
        limits = (
            ("title", len(title or ""), self._rules.max_title_chars),
            ("description", len(description or ""), self._rules.max_description_chars),
            ("features", sum(map(len, features)), self._rules.max_feature_chars),
        )
        for name, size, limit in limits:
            if size > limit:
                return f"{name} has {size} characters (limit {limit})"
        return None

    def _label(self, raw_path: list[Any]) -> tuple[str | None, list[str], str | None]:
        path = [seg for seg in (_clean_label(str(s)) for s in raw_path) if seg]
        if len(path) < self._min_depth:
            return None, [], f"label path {path!r} is shorter than {self._min_depth}"
        if self._level >= len(path):
            return None, [], f"label path {path!r} has no level {self._level}"
        cut = len(path) if self._level == -1 else self._level + 1
        path = path[:cut]
        return path[-1], path, None

    def check(self, record: RawRecord) -> Product | Rejection:
        if record.fields is None:
            return Rejection(record.row, Reason.BAD_ROW, record.error or "unparseable row", record.raw)
        f = record.fields
        product_id = clean_text(f.get("id"))
        if not product_id:
            return Rejection(record.row, Reason.MISSING_ID, "no product id", record.raw)
        title, description = clean_text(f.get("title")), clean_text(f.get("description"))
        if not title and not description:
            return Rejection(record.row, Reason.MISSING_TEXT, "no title and no description", record.raw)
        features = clean_list(f.get("features"))
        if (too_big := self._oversize(title, description, features)) is not None:
            return Rejection(record.row, Reason.OVERSIZE_TEXT, too_big, record.raw)
        label, label_path, why = self._label(f.get("label_path") or [])
        if label is None:
            return Rejection(record.row, Reason.MISSING_LABEL, why or "no label", record.raw)
        if self._allowed is not None and label not in self._allowed:
            return Rejection(record.row, Reason.UNKNOWN_LABEL, f"label {label!r} is not a known class", record.raw)
        raw_price = f.get("price")
        price = parse_price(raw_price)
        if price is None and clean_text(raw_price) is not None:
            self.unparsed_prices += 1
        return Product(
            id=product_id,
            source=self.source,
            title=title,
            description=description,
            features=features,
            brand=clean_text(f.get("brand")),
            price=price,
            image=clean_text(f.get("image")),
            label=label,
            label_path=label_path,
        )
