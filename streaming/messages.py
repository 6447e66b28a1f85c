"""Wire formats of the stream: product messages in, prediction and dead-letter messages out.

A product message is the /predict JSON of one product plus an ``id`` chosen by the sender. Its
request_id is derived from (broker, subject, id), so a redelivered message maps to the same
request-log row and the same prediction, never to a second one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from api.schemas import Product
from ml.hierarchy import top_entries
from streaming.brokers.base import Delivery

REQUEST_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "productcat:stream")
MAX_ID_CHARS = 200
EXCERPT_BYTES = 200  # of a bad payload quoted in its dead letter: enough to find it, never all of it
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class Accepted:
    delivery: Delivery
    message_id: str
    request_id: str
    product: Product


@dataclass(frozen=True)
class Rejected:
    delivery: Delivery
    kind: str  # too_large | not_json | no_id | invalid | too_long | too_many_deliveries
    reason: str
    message_id: str | None = None


def request_id_for(*, channel: str, subject: str, message_id: str) -> str:
    return str(uuid.uuid5(REQUEST_ID_NAMESPACE, f"{channel}\x1f{subject}\x1f{message_id}"))


def excerpt(body: bytes) -> str:
    text = body[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    return text + ("…" if len(body) > EXCERPT_BYTES else "")


def _validation_reason(exc: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
             for e in exc.errors(include_url=False, include_input=False)]
    return "; ".join(parts)[:MAX_REASON_CHARS]


def parse(delivery: Delivery, *, channel: str, subject: str, max_bytes: int, max_chars: int,
          max_deliveries: int) -> Accepted | Rejected:
    """Accept a product message, or say (briefly, without echoing it) why it cannot be scored."""
    body = delivery.body
    if len(body) > max_bytes:
        return Rejected(delivery, "too_large", f"message has {len(body):,} bytes; at most {max_bytes:,}")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Rejected(delivery, "not_json", f"not JSON: {str(exc)[:200]}")
    if not isinstance(payload, dict):
        return Rejected(delivery, "invalid", f"expected a JSON object, got {type(payload).__name__}")
    raw_id = payload.pop("id", None)
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).strip():
        return Rejected(delivery, "no_id", "id: a non-empty string or integer is required")
    message_id = str(raw_id)
    if len(message_id) > MAX_ID_CHARS:
        return Rejected(delivery, "no_id", f"id: at most {MAX_ID_CHARS} characters")
    if delivery.delivery_count > max_deliveries:
        return Rejected(delivery, "too_many_deliveries", f"delivered {delivery.delivery_count} times without "
                        f"being acknowledged (at most {max_deliveries})", message_id)
    try:
        product = Product.model_validate(payload)
    except ValidationError as exc:
        return Rejected(delivery, "invalid", _validation_reason(exc), message_id)
    if (chars := product.text_chars()) > max_chars:
        return Rejected(delivery, "too_long", f"the product has {chars:,} characters of text; at most {max_chars:,}",
                        message_id)
    return Accepted(delivery, message_id, request_id_for(channel=channel, subject=subject, message_id=message_id),
                    product)


def prediction_message(accepted: Accepted, answer: dict[str, Any], *, model_name: str, model_version: str,
                       low_confidence_threshold: float | None = None, needs_review: bool = False) -> bytes:
    """The answer as /predict gives it, ``low_confidence`` included (below the version's threshold); when
    ``needs_review``, no label (top_k still) and the review queue item's id."""
    return orjson.dumps({
        "id": accepted.message_id,
        "request_id": accepted.request_id,
        "label": None if needs_review else answer["label"],
        "probability": answer["probability"],
        "low_confidence": low_confidence_threshold is not None and answer["probability"] < low_confidence_threshold,
        "needs_review": needs_review,
        "review_id": accepted.request_id if needs_review else None,
        "label_path": [] if needs_review else list(answer["label_path"]),
        "top_k": top_entries(answer),  # with each label's path and path probabilities when the version gives them
        "model": {"name": model_name, "version": model_version},
    })


def dead_letter_message(rejected: Rejected, *, subject: str) -> bytes:
    return orjson.dumps({
        "id": rejected.message_id,
        "kind": rejected.kind,
        "reason": rejected.reason,
        "subject": subject,
        "position": rejected.delivery.position,
        "delivery_count": rejected.delivery.delivery_count,
        "bytes": len(rejected.delivery.body),
        "excerpt": excerpt(rejected.delivery.body),
    })
