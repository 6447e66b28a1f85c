"""Exact explanations of the TF-IDF + logistic-regression baseline (ml/models/baseline.py).

The class's logit is ``intercept[c] + sum_j coef[c, j] * x[j]`` over the TF-IDF features ``x`` of the
product's text, so each feature's share is exact, with nothing approximated. A feature's share is then
laid back onto the text: spread evenly over its occurrences, and over the characters of each one (the
tokens of a word n-gram, the real characters of a character n-gram), and summed per word of each field.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from ml.explain import Deadline, Explanation, FeatureWeight, Unexplainable, field_spans, strongest, text_layout

log = logging.getLogger(__name__)

METHOD = "linear-exact"
_CHECK_EVERY = 256  # words between deadline checks while n-grams are located

# An occurrence: the indices (into the original text) of the characters it covers.
Occurrences = dict[str, list[list[int]]]


def _lowered(text: str, lowercase: bool) -> tuple[str, list[int]]:
    """The text as the vectoriser reads it (``str.lower`` of the whole text: a Greek final sigma depends on
    its context), and for each of its characters the index in ``text`` (lower-casing may lengthen a
    character: 'İ' becomes two)."""
    if not lowercase:
        return text, list(range(len(text)))
    lowered = text.lower()
    origin = [i for i, char in enumerate(text) for _ in range(len(char.lower()))]
    if len(origin) != len(lowered):  # no known character does this; stay in range if one ever does
        origin = [min(i, len(text) - 1) for i in range(len(lowered))]
    return lowered, origin


def _word_occurrences(vectorizer: Any, text: str, deadline: Deadline,  # noqa: ANN401
                      wanted: set[str] | None = None) -> Occurrences:
    """Each word n-gram the vectoriser makes of ``text`` (those in ``wanted``; None: all), with the
    characters of its tokens."""
    lowered, origin = _lowered(text, vectorizer.lowercase)
    if vectorizer.tokenizer is not None or vectorizer.preprocessor is not None or vectorizer.stop_words is not None:
        raise Unexplainable("cannot locate the words of a vectoriser with its own tokenizer, preprocessor or stops")
    pattern = re.compile(vectorizer.token_pattern)  # as build_tokenizer compiles it
    group = 1 if pattern.groups == 1 else 0
    tokens = [(m.group(group), m.start(group), m.end(group)) for m in pattern.finditer(lowered)]
    low, high = vectorizer.ngram_range
    found: Occurrences = defaultdict(list)
    for n in range(low, high + 1):
        for i in range(len(tokens) - n + 1):
            window = tokens[i:i + n]
            gram = " ".join(t for t, _, _ in window)
            if wanted is None or gram in wanted:
                found[gram].append([origin[k] for _, start, end in window for k in range(start, end)])
        deadline.check("locating word n-grams")
    return found


def _char_occurrences(vectorizer: Any, text: str, deadline: Deadline,  # noqa: ANN401
                      wanted: set[str] | None = None) -> Occurrences:
    """scikit-learn's char_wb n-grams of ``text`` (those in ``wanted``; None: all): each word padded
    with a space either side, n-grams inside it, a word shorter than n counted once; each with the
    indices of its real characters (the padding spaces have none)."""
    lowered, origin = _lowered(text, vectorizer.lowercase)
    low, high = vectorizer.ngram_range
    found: Occurrences = defaultdict(list)
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", lowered)]  # str.split()'s words
    for count, (first, last) in enumerate(words, 1):
        padded = f" {lowered[first:last]} "
        for n in range(low, high + 1):
            offset = 0
            while True:
                gram = padded[offset:offset + n]
                if wanted is None or gram in wanted:
                    # padded[j] is lowered[first - 1 + j]; its ends are the padding
                    real = range(max(first, first - 1 + offset), min(last, first - 1 + offset + n))
                    found[gram].append([origin[k] for k in real])
                if offset + n >= len(padded):
                    break
                offset += 1
            if offset == 0:  # a word shorter than n is counted once, as scikit-learn does
                break
        if count % _CHECK_EVERY == 0:
            deadline.check("locating character n-grams")
    return found


# Column -> feature name of each fitted vectoriser: building it sorts a vocabulary of up to max_features
# (200,000) terms, so it is built once per loaded model, not per explanation.
_NAMES: weakref.WeakKeyDictionary[Any, np.ndarray] = weakref.WeakKeyDictionary()


def _feature_names(vectorizer: Any) -> np.ndarray:  # noqa: ANN401
    names = _NAMES.get(vectorizer)
    if names is None:
        names = _NAMES[vectorizer] = vectorizer.get_feature_names_out()
    return names


_LOCATORS = {"word": _word_occurrences, "char_wb": _char_occurrences}
_KINDS = {"word": "word", "char_wb": "char"}


def _vectorizers(pipeline: Any) -> list[tuple[Any, int]]:  # noqa: ANN401
    """The fitted vectorisers of the feature union with the column each one's block starts at."""
    union = pipeline.named_steps["features"]
    blocks, start = [], 0
    for _, vectorizer in union.transformer_list:
        if vectorizer == "drop":
            continue
        blocks.append((vectorizer, start))
        start += len(vectorizer.vocabulary_)
    return blocks


def _class_weights(classifier: Any, label_index: int, n_labels: int) -> tuple[np.ndarray, float]:  # noqa: ANN401
    """The coefficient row and intercept of the class's logit (two classes: scikit-learn keeps one
    row, the logit of class 1; class 0's is its negative)."""
    coef, intercept = classifier.coef_, classifier.intercept_
    if coef.shape[0] == 1 and n_labels == 2:
        sign = 1.0 if label_index == 1 else -1.0
        return sign * coef[0], sign * float(intercept[0])
    return coef[label_index], float(intercept[label_index])


def explain_linear(classifier: Any, record: Mapping[str, Any], *, label_index: int,  # noqa: ANN401
                   deadline: Deadline, top_features: int) -> Explanation:
    layout = text_layout(record)
    pipeline = classifier.pipeline
    x = pipeline.named_steps["features"].transform([layout.text]).tocsr()
    deadline.check("computing features")
    coef, base_value = _class_weights(pipeline.named_steps["classifier"], label_index, len(classifier.labels))
    columns, values = x.indices, x.data
    contributions = values * coef[columns]  # exact: coef[c, j] * x[j] for each feature present
    score = base_value + float(contributions.sum())

    char_weights = np.zeros(len(layout.text), dtype=np.float64)
    features: list[FeatureWeight] = []
    blocks = _vectorizers(pipeline)
    for position, (vectorizer, start) in enumerate(blocks):
        end = blocks[position + 1][1] if position + 1 < len(blocks) else coef.shape[0]
        in_block = (columns >= start) & (columns < end)
        if not in_block.any():
            continue
        analyzer = vectorizer.analyzer
        if analyzer not in _LOCATORS:
            raise Unexplainable(f"cannot locate n-grams of analyzer {analyzer!r}")
        names = _feature_names(vectorizer)
        present = {str(names[column - start]) for column in columns[in_block]}
        occurrences = _LOCATORS[analyzer](vectorizer, layout.text, deadline, present)
        indices: list[int] = []
        shares: list[float] = []
        for column, weight in zip(columns[in_block], contributions[in_block], strict=True):
            name = str(names[column - start])
            features.append(FeatureWeight(feature=name, kind=_KINDS[analyzer], weight=float(weight)))
            places = occurrences.get(name)
            if not places:  # would mean this module reads the text differently from the vectoriser
                log.warning("feature %r has weight but was not found in the text", name)
                continue
            for chars in places:
                if chars:
                    indices.extend(chars)
                    shares.extend([weight / len(places) / len(chars)] * len(chars))
        np.add.at(char_weights, np.asarray(indices, dtype=np.int64), np.asarray(shares, dtype=np.float64))
        deadline.check("mapping features to words")

    return Explanation(
        label=classifier.labels[label_index], method=METHOD, base_value=base_value, score=score,
        fields=field_spans(layout, char_weights), top_features=strongest(features, top_features),
    )
