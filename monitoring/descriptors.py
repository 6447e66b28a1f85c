"""Per-product descriptors that mean something for product text, computed the same way
for the reference (canonical training rows) and the current window (logged requests).

Every record goes through ``ml.features.clean_record`` first, the cleaning the model
itself applies, so a descriptor measures what the model saw rather than how a caller
spelled it ("$12.99" and 12.99 are the same price; unreadable price text is no price).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from ml.features import clean_record

log = logging.getLogger(__name__)

# Bump when a descriptor's definition changes: cached references carry the version they were built with.
DESCRIPTORS_VERSION = "1"
_TOKEN = re.compile(r"[^\W\d_]{2,}")  # words of two letters or more: digits and sizes are not vocabulary

# Numeric descriptor columns (NaN where a descriptor does not apply to a row).
TITLE_CHARS = "title_chars"  # characters in the title; NaN when there is no title
DESCRIPTION_CHARS = "description_chars"  # characters in a non-empty description; NaN when empty
LOG_PRICE = "log_price"  # log1p(price) of readable prices: prices span four orders of magnitude
OOV_RATE = "oov_rate"  # share of the row's words that the reference vocabulary lacks
# 0/1 columns whose mean is a share of the window.
DESCRIPTION_EMPTY = "description_empty"
BRAND_EMPTY = "brand_empty"
PRICE_MISSING = "price_missing"  # absent, or text no price can be read from
NON_ASCII = "non_ascii"  # the title or description holds a letter outside ASCII (accents, other scripts)
TITLE = "title"  # the cleaned title itself: a text column for the domain-classifier drift

NUMERIC = (TITLE_CHARS, DESCRIPTION_CHARS, LOG_PRICE, OOV_RATE)
SHARES = (DESCRIPTION_EMPTY, BRAND_EMPTY, PRICE_MISSING, NON_ASCII)
COLUMNS = (TITLE, *NUMERIC, *SHARES)


def tokens(text: str | None) -> list[str]:
    return _TOKEN.findall(text.lower()) if text else []


def vocabulary(records: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Words of the titles and descriptions of ``records`` (cleaned as the model cleans them)."""
    words: set[str] = set()
    for record in records:
        fields = clean_record(record)
        words.update(tokens(fields["title"]))
        words.update(tokens(fields["description"]))
    return frozenset(words)


def _has_non_ascii_letter(text: str | None) -> bool:
    return bool(text) and any(ord(ch) > 127 and ch.isalpha() for ch in text)


def _oov_rate(words: list[str], known: frozenset[str]) -> float:
    return sum(word not in known for word in words) / len(words) if words else math.nan


def describe_one(record: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    fields = clean_record(record)
    title, description, price = fields["title"], fields["description"], fields["price"]
    return {
        TITLE: title or "",
        TITLE_CHARS: float(len(title)) if title else math.nan,
        DESCRIPTION_CHARS: float(len(description)) if description else math.nan,
        LOG_PRICE: math.log1p(price) if price is not None else math.nan,
        OOV_RATE: _oov_rate(tokens(title) + tokens(description), known),
        DESCRIPTION_EMPTY: float(description is None),
        BRAND_EMPTY: float(fields["brand"] is None),
        PRICE_MISSING: float(price is None),
        NON_ASCII: float(_has_non_ascii_letter(title) or _has_non_ascii_letter(description)),
    }


def describe(records: Iterable[Mapping[str, Any]], known: frozenset[str], *, total: int | None = None) -> pd.DataFrame:
    """One row of descriptors per record, columns in ``COLUMNS`` order."""
    rows = [describe_one(r, known) for r in tqdm(records, total=total, desc="descriptors", unit="rows", leave=False)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame[list(NUMERIC + SHARES)] = frame[list(NUMERIC + SHARES)].astype(np.float64)
    return frame


def summary(frame: pd.DataFrame) -> dict[str, float | None]:
    """Window-level values the decision reads: the share columns' means and the mean OOV rate."""
    values: dict[str, float | None] = {column: _mean(frame[column]) for column in SHARES}
    values[OOV_RATE] = _mean(frame[OOV_RATE])
    return values


def _mean(series: pd.Series) -> float | None:
    series = series.dropna()
    return float(series.mean()) if len(series) else None
