"""Clean one raw record and decide: a Product, or a quarantined row with its reason."""

from __future__ import annotations

import html
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ml.params import DatasetSpec, IngestParams
from ml.readers.base import RawRecord, raw_text
from ml.schema import Product
from ml.text import CONTROL_CHARS, clean_list, clean_text, parse_price


class Reason(StrEnum):
    BAD_ROW = "bad_row"  # the line did not parse (bad JSON, broken CSV row)
    BAD_TYPE = "bad_type"  # a field holds the wrong JSON type (an object as title, a number as id)
    BAD_ID = "bad_id"  # the id holds a control character: stripping it could merge two products
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


_JSON_TYPE = {dict: "an object", list: "a list", tuple: "a list", bool: "a boolean", int: "a number",
              float: "a number", str: "a string"}
_TEXT = ((str,), "a string")
_ID = ((str, int), "a string or an integer")  # integer ids (and label codes) come from Parquet sources
_SCALAR_FIELDS = {"id": _ID, "title": _TEXT, "brand": _TEXT, "image": _TEXT,
                  "price": ((str, int, float), "a string or a number")}
_LIST_FIELDS = {"description": _TEXT, "features": _TEXT, "label_path": _ID}  # a list of these, or one
# Exact types for the fast path (almost every row); anything else takes the isinstance path below.
_EXACT = {allowed: {*allowed, type(None)} for allowed, _ in (*_SCALAR_FIELDS.values(), *_LIST_FIELDS.values())}


def _mistyped(value: Any, allowed: tuple[type, ...]) -> bool:
    return value is not None and (isinstance(value, bool) or not isinstance(value, allowed))


def _why(where: str, value: Any, expected: str) -> str:
    return f"{where} is {_JSON_TYPE.get(type(value), type(value).__name__)}, expected {expected}"


def wrong_type(fields: dict[str, Any]) -> str | None:
    """Why a field cannot be read as its kind of value, naming the field; None when all can.
    A value is never stringified: an object where a title belongs is not a title."""
    for name, (allowed, expected) in _SCALAR_FIELDS.items():
        value = fields.get(name)
        if type(value) not in _EXACT[allowed] and _mistyped(value, allowed):
            return _why(name, value, expected)
    for name, (allowed, expected) in _LIST_FIELDS.items():
        value = fields.get(name)
        exact = _EXACT[allowed]
        if type(value) in exact or (type(value) in (list, tuple) and exact.issuperset(map(type, value))):
            continue
        if not isinstance(value, (list, tuple)):
            if _mistyped(value, allowed):
                return _why(name, value, expected)
            continue
        for i, item in enumerate(value):
            if _mistyped(item, allowed):
                return _why(f"{name}[{i}]", item, expected)
    return None


def _short(text: str, limit: int = 80) -> str:
    # Details quote source values: keep them bounded.
    return text if len(text) <= limit else text[:limit] + "..."


def _reject(record: RawRecord, reason: Reason, detail: str) -> Rejection:
    return Rejection(record.row, reason, detail, raw_text(record.raw))


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
            return None, [], f"label path {_short(repr(path))} is shorter than {self._min_depth}"
        if self._level >= len(path):
            return None, [], f"label path {_short(repr(path))} has no level {self._level}"
        cut = len(path) if self._level == -1 else self._level + 1
        path = path[:cut]
        return path[-1], path, None

    def check(self, record: RawRecord) -> Product | Rejection:
        if record.fields is None:
            return _reject(record, Reason.BAD_ROW, record.error or "unparseable row")
        f = record.fields
        if (why := wrong_type(f)) is not None:
            return _reject(record, Reason.BAD_TYPE, why)
        if isinstance(f.get("id"), str) and (bad := CONTROL_CHARS.search(f["id"])) is not None:
            why = f"id holds control character U+{ord(bad.group()):04X}"
            return _reject(record, Reason.BAD_ID, why)
        product_id = clean_text(f.get("id"))
        if not product_id:
            return _reject(record, Reason.MISSING_ID, "no product id")
        title, description = clean_text(f.get("title")), clean_text(f.get("description"))
        if not title and not description:
            return _reject(record, Reason.MISSING_TEXT, "no title and no description")
        features = clean_list(f.get("features"))
        if (too_big := self._oversize(title, description, features)) is not None:
            return _reject(record, Reason.OVERSIZE_TEXT, too_big)
        label, label_path, why = self._label(f.get("label_path") or [])
        if label is None:
            return _reject(record, Reason.MISSING_LABEL, why or "no label")
        if self._allowed is not None and label not in self._allowed:
            why = f"label {_short(repr(label))} is not a known class"
            return _reject(record, Reason.UNKNOWN_LABEL, why)
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
