"""Cleaning that real catalogue text needs: entities, tags, whitespace, prices."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from typing import Any

_TAG = re.compile(r"<[^>]{0,500}>")
_NUMBER = re.compile(r"\d[\d.,\s]*")
_WORD = re.compile(r"\w+")
# C0 controls and DEL, except the whitespace ones (\t \n \v \f \r), which collapse to a space.
# NUL above all: Postgres cannot store it, and no catalogue text means it.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_MINUS = frozenset("-\u2212\u2012\u2013\u2014\ufe63\uff0d")  # hyphen-minus, minus sign, dashes used as one


def clean_text(value: Any) -> str | None:
    """Unescape HTML entities (twice: feeds are often double-escaped), drop tags,
    drop control characters, collapse whitespace. Lists of paragraphs are joined
    with a space. Returns None for anything that ends up empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (list, tuple)):
        value = " ".join(part for part in (clean_text(v) for v in value) if part)
    text = str(value)
    # Most catalogue text has no markup: skip the costly passes unless needed.
    if "&" in text:
        text = html.unescape(html.unescape(text))
    if "<" in text:
        text = _TAG.sub(" ", text)
    if not text.isprintable() and CONTROL_CHARS.search(text):  # isprintable: a cheap test that passes most text
        text = CONTROL_CHARS.sub("", text)
    text = " ".join(text.split())
    return text or None


def clean_list(values: Any) -> list[str]:
    """Clean each item of a bullet list, dropping empty ones. A scalar becomes a one-item list."""
    if values is None or (isinstance(values, float) and math.isnan(values)):
        return []
    if hasattr(values, "tolist") and not isinstance(values, str):  # a list column read back from Parquet (ndarray)
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        values = [values]
    return [text for text in (clean_text(v) for v in values) if text]


def _to_float(number: str) -> float | None:
    number = number.replace(" ", "").strip(".,")
    if "," in number and "." not in number and re.fullmatch(r"\d+,\d{2}", number):
        number = number.replace(",", ".")  # decimal comma: "12,99"
    else:
        number = number.replace(",", "")  # thousands separators: "1,299.00", "32,999"
    try:
        return float(number)
    except ValueError:
        return None


def parse_price(value: Any) -> float | None:
    """Parse a price cell into a float, or None when there is no usable price.

    Accepts numbers and strings with any currency sign and thousands commas
    ("$12.99", "$1,299.00", "₹32,999", "£5.00"). A range ("$8.99 - $24.99")
    gives its LOWER bound: it is the "from" price a shop shows for the
    cheapest variant, a value that exists, where a midpoint would not.
    Text that is not a price (a block of CSS, "No price") gives None, and so
    does a negative price ("-$5.00", "$-5", "−5"): a price cannot be below zero.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and value >= 0 else None
    text = str(value).strip()
    if not text or len(text) > 60:  # real price strings are short; long ones are scraped junk
        return None
    match = _NUMBER.search(text)
    if match is None or not _MINUS.isdisjoint(text[: match.start()]):
        return None
    # Junk around the number (letters other than a currency code) means this is not a price.
    leftover = _NUMBER.sub(" ", text)
    leftover = re.sub(r"[$£€₹¥]|\b(?:USD|EUR|GBP|INR|Rs\.?|to)\b|[-–~\s]", "", leftover, flags=re.I)
    if leftover:
        return None
    return _to_float(match.group())


def normalise_title(title: str | None) -> str:
    """Lower-cased word sequence: the key under which two listings count as the same title."""
    if not title:
        return ""
    return " ".join(_WORD.findall(title.lower()))


def join_nonempty(parts: Iterable[str | None], sep: str = " ") -> str:
    return sep.join(p for p in parts if p)
