"""The canonical Product row that every catalogue reader maps onto.

Deliberately has no field for a source's own category list (Amazon's
``category``): a model can only ever see what is declared here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

# Fields a model may read to predict a label. ``label``/``label_path`` are
# targets and ``id``/``source`` bookkeeping; neither is an input.
INPUT_FIELDS: tuple[str, ...] = ("title", "description", "features", "brand", "price", "image")


@dataclass(slots=True)
class Product:
    id: str
    source: str
    title: str | None = None
    description: str | None = None
    features: list[str] = field(default_factory=list)
    brand: str | None = None
    price: float | None = None
    image: str | None = None
    label: str | None = None
    label_path: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRODUCT_ARROW_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field("features", pa.list_(pa.string())),
        pa.field("brand", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("image", pa.string()),
        pa.field("label", pa.string()),
        pa.field("label_path", pa.list_(pa.string())),
    ]
)

PRODUCT_COLUMNS: tuple[str, ...] = tuple(PRODUCT_ARROW_SCHEMA.names)


def products_to_table(products: list[Product]) -> pa.Table:
    columns = {name: [getattr(p, name) for p in products] for name in PRODUCT_COLUMNS}
    return pa.Table.from_pydict(columns, schema=PRODUCT_ARROW_SCHEMA)
