"""Request and response bodies of the prediction service (Pydantic; the tables live in api/db)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from ml.text import clean_list, clean_text, parse_price

# The same limits ingest applies to training rows (params.yaml `ingest:`), so the
# service never scores a product that training would have quarantined as oversize.
MAX_TITLE_CHARS = 500
MAX_DESCRIPTION_CHARS = 20_000
MAX_FEATURE_CHARS = 5_000
MAX_FEATURES = 100

Description = Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_CHARS)]
Feature = Annotated[str, StringConstraints(max_length=MAX_FEATURE_CHARS)]

# Real catalogue rows (Amazon-2018 metadata; the fashion catalogue), used as the docs' examples.
EXAMPLE_PRODUCT = {
    "title": "Dundas Jafine UD48 Vents, 4-Inch",
    "brand": "Dundas Jafine",
    "price": "$27.89",
    "feature": [
        "Ideal for use in tight fitting clothes dryer applications",
        "2-piece aluminum construction",
        "Duct extends from 28 to 45-Inches length",
    ],
    "description": ["Space saver aluminum dryer venting duct. Extends 28\" to 45\". Allows dryer to be placed 3\" "
                    "from wall. Constructed of a 2-piece adjustable aluminum duct."],
}
EXAMPLE_FASHION_PRODUCT = {"title": "Turtle Check Men Navy Blue Shirt"}


class Product(BaseModel):
    """One catalogue product, in the Amazon-2018 metadata shape. Any other field
    (``category`` included) is ignored: it never reaches the model."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [EXAMPLE_PRODUCT]})

    title: Annotated[str, StringConstraints(max_length=MAX_TITLE_CHARS)] | None = None
    description: Description | Annotated[list[Description], Field(max_length=MAX_FEATURES)] | None = Field(
        None, description="A string, or a list of paragraphs (as Amazon rows carry it)."
    )
    features: Annotated[list[Feature], Field(max_length=MAX_FEATURES)] | None = Field(
        None, validation_alias=AliasChoices("features", "feature"), description="Bullet points ('feature' also read)."
    )
    brand: Annotated[str, StringConstraints(max_length=MAX_TITLE_CHARS)] | None = None
    price: float | Annotated[str, StringConstraints(max_length=60)] | None = Field(
        None, description='A number, or a price string such as "$12.99", "$1,299.00" or "$8.99 - $24.99" (lower bound).'
    )
    image: Annotated[str, StringConstraints(max_length=2_000)] | None = Field(
        None, validation_alias=AliasChoices("image", "imageURL", "imageURLHighRes"),
        description="Image reference (URL or path); stored with the request.",
    )

    @field_validator("image", mode="before")
    @classmethod
    def _first_image(cls, value: Any) -> Any:
        return (value[0] if value else None) if isinstance(value, list) else value

    @field_validator("price")
    @classmethod
    def _readable_price(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, float) and (value != value or value < 0 or value == float("inf")):
            raise ValueError("price must be a finite number >= 0")
        if isinstance(value, str) and value.strip() and parse_price(value) is None:
            raise ValueError(f"cannot read a price from {value!r}")
        return value

    @model_validator(mode="after")
    def _has_text(self) -> Product:
        description = " ".join(self.description) if isinstance(self.description, list) else self.description
        if not clean_text(self.title) and not clean_text(description) and not clean_list(self.features):
            raise ValueError("a product needs a title or a description (or features): all are empty")
        return self

    def record(self) -> dict[str, Any]:
        """The raw fields as the model's pyfunc takes them (it does the cleaning itself)."""
        return self.model_dump(exclude_none=True)


class LabelProbability(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    request_id: str = Field(description="Id of this product's prediction: send it back with /feedback.")
    label: str
    probability: float
    label_path: list[str] = Field(description="The label's path in the category tree (root first).")
    top_k: list[LabelProbability]


class ModelRef(BaseModel):
    name: str
    version: str


class PredictResponse(BaseModel):
    batch_id: str
    model: ModelRef
    predictions: list[Prediction] = Field(description="One per product sent, in the same order.")


class FeedbackIn(BaseModel):
    # Ids are ours (UUIDs); control characters (NUL above all, which Postgres cannot store) are refused.
    request_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    label: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200,
                                            pattern=r"^[^\x00-\x1f\x7f]+$")]


class FeedbackOut(BaseModel):
    request_id: str
    label: str
    known_label: bool = Field(description="Whether the serving model knows this label (False: a new category).")


class ModelInfo(BaseModel):
    name: str
    alias: str
    version: str | None
    run_id: str | None = None
    runtime: str | None = Field(None, description="What computes the answers: torch, onnx-fp32, onnx-int8, sklearn.")
    loaded_at: str | None = None
    labels: list[str] = []
    training_metrics: dict[str, float] = {}
    card: dict[str, Any] = {}
    refused_versions: dict[str, str] = Field({}, description="Versions that failed to load or self-test, and why.")
    last_error: str | None = None
