"""Request and response bodies of the prediction service (Pydantic; the tables live in api/db)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from ml.params import IngestParams
from ml.text import clean_list, clean_text, parse_price

# The limits ingest applies to training rows (ml/params.py IngestParams, params.yaml `ingest:`), counted
# on the raw text: cleaning only ever shortens it, so the service never scores a product that training
# would have quarantined as oversize. Description paragraphs are joined with a space, as ingest joins them.
MAX_TITLE_CHARS: int = IngestParams.model_fields["max_title_chars"].default
MAX_DESCRIPTION_CHARS: int = IngestParams.model_fields["max_description_chars"].default
MAX_FEATURE_CHARS: int = IngestParams.model_fields["max_feature_chars"].default  # all features together
MAX_FEATURES = 100

Description = Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_CHARS)]
Feature = Annotated[str, StringConstraints(max_length=MAX_FEATURE_CHARS)]
ImageRef = Annotated[str, StringConstraints(max_length=2_000)]

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
        None, description=f"A string, or a list of paragraphs (as Amazon rows carry it): at most "
        f"{MAX_DESCRIPTION_CHARS:,} characters in all, counting a space between paragraphs."
    )
    features: Annotated[list[Feature], Field(max_length=MAX_FEATURES)] | None = Field(
        None, validation_alias=AliasChoices("features", "feature"),
        description=f"Bullet points ('feature' also read): at most {MAX_FEATURE_CHARS:,} characters in all.",
    )
    brand: Annotated[str, StringConstraints(max_length=MAX_TITLE_CHARS)] | None = None
    # Strict: a long numeric string must not slip past the string's maxLength by reading as a number.
    price: Annotated[float, Strict()] | Annotated[str, StringConstraints(max_length=60)] | None = Field(
        None, description='A number, or a price string such as "$12.99", "$1,299.00" or "$8.99 - $24.99" (lower bound).'
    )
    image: ImageRef | Annotated[list[ImageRef], Field(max_length=MAX_FEATURES)] | None = Field(
        None, validation_alias=AliasChoices("image", "imageURL", "imageURLHighRes"),
        description="Image reference (URL or path), or a list of them as Amazon rows carry it (the first is "
        "kept); stored with the request.",
    )

    @field_validator("image")
    @classmethod
    def _first_image(cls, value: str | list[str] | None) -> str | None:
        return (value[0] if value else None) if isinstance(value, list) else value

    @field_validator("price")
    @classmethod
    def _readable_price(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, float) and (value != value or value < 0 or value == float("inf")):
            raise ValueError("price must be a finite number >= 0")
        if isinstance(value, str) and value.strip() and parse_price(value) is None:
            raise ValueError(f"cannot read a price from {value!r}")
        return value

    @field_validator("description")
    @classmethod
    def _description_within_limit(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and (size := _joined_chars(value)) > MAX_DESCRIPTION_CHARS:
            raise ValueError(f"the description has {size:,} characters in all; at most {MAX_DESCRIPTION_CHARS:,}")
        return value

    @field_validator("features")
    @classmethod
    def _features_within_limit(cls, value: list[str] | None) -> list[str] | None:
        if value and (size := sum(map(len, value))) > MAX_FEATURE_CHARS:
            raise ValueError(f"the features have {size:,} characters in all; at most {MAX_FEATURE_CHARS:,}")
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

    def text_chars(self) -> int:
        """Characters of text the model reads: title, description, features and brand together."""
        description = _joined_chars(self.description) if isinstance(self.description, list) else len(
            self.description or "")
        return len(self.title or "") + description + sum(map(len, self.features or [])) + len(self.brand or "")


def _joined_chars(parts: list[str]) -> int:
    return sum(map(len, parts)) + max(len(parts) - 1, 0)


# One product or a list of them, told apart by the JSON's shape, so that an error names one field
# rather than every union member's attempt. The error answers drop these tags from `loc`, which then
# is the path into the JSON as sent: body/title, body/3/price (api/errors.py).
ONE_PRODUCT, PRODUCT_LIST = "one-product", "product-list"
BODY_SHAPE_TAGS = frozenset({ONE_PRODUCT, PRODUCT_LIST})


def _body_shape(value: Any) -> str:
    return PRODUCT_LIST if isinstance(value, list) else ONE_PRODUCT


PredictBody = Annotated[
    Annotated[Product, Tag(ONE_PRODUCT)] | Annotated[list[Product], Tag(PRODUCT_LIST)],
    Discriminator(_body_shape),
]


class LabelProbability(BaseModel):
    label: str
    probability: float
    path: list[str] | None = Field(None, description="The label's path in the training category tree, root first "
                                   "(absent for versions that give none).")
    path_probabilities: list[float] | None = Field(
        None, description="The probability of each node of `path` (the sum over the leaves under it): never "
        "rising from root to label, the label's own last.")


class Prediction(BaseModel):
    request_id: str = Field(description="Id of this product's prediction: send it back with /feedback.")
    label: str | None = Field(description="The category; null when the product needs review.")
    probability: float = Field(description="The top probability (of top_k[0]).")
    label_path: list[str] = Field(description="The label's path in the category tree (root first); [] when the "
                                  "product needs review.")
    top_k: list[LabelProbability]
    needs_review: bool = Field(
        False, description="The top probability is below the version's review threshold (chosen on validation "
        "for a target precision): no category is given, top_k still is, and the product waits in the review queue.")
    review_id: str | None = Field(
        None, description="The review queue item (GET /review/{id}) when needs_review: the request_id itself.")
    low_confidence: bool = Field(
        False, description="The top probability is below the version's low-confidence threshold: on validation, "
        "answers that unsure were right at most half the time (see GET /model). Often a product outside "
        "the catalogue the model was trained on.")
    explanation: Explanation | None = Field(
        None, description="Only with ?explain=true: why the product got its label (top_k[0] when it needs review).")
    modalities: list[str] | None = Field(
        None, description="What the answer was computed from: [\"text\"]; a model that reads photos may say "
        "[\"image\"] or [\"text\", \"image\"], or [] for an image-only model given no photo (its answer is "
        "then the training prior). Null for versions that do not report it.")


class ModelRef(BaseModel):
    name: str
    version: str


class PredictResponse(BaseModel):
    batch_id: str
    model: ModelRef
    predictions: list[Prediction] = Field(description="One per product sent, in the same order.")


_LABEL = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"


class FeedbackIn(BaseModel):
    # Ids are ours (UUIDs); control characters (NUL above all, which Postgres cannot store) are refused.
    request_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    # Checked as sent, then stripped: the schema's maxLength and pattern (some visible character, no
    # control characters) then say exactly which labels are accepted.
    label: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_LABEL), AfterValidator(str.strip)]


class FeedbackOut(BaseModel):
    request_id: str
    label: str
    known_label: bool = Field(description="Whether the serving model knows this label (False: a new category).")


class ProbationInfo(BaseModel):
    version: str
    requests: int = Field(description="Requests answered so far by the version on probation.")
    failures: int
    window: int = Field(description="Requests after which the version has proven itself.")
    max_failures: int = Field(description="Failures within the window that swap the previous champion back.")


class RollbackInfo(BaseModel):
    version: str = Field(description="The version swapped back out.")
    to_version: str = Field(description="The version that serves again.")
    reason: str
    at: str


class ModelInfo(BaseModel):
    name: str
    alias: str
    version: str | None
    run_id: str | None = None
    runtime: str | None = Field(None, description="What computes the answers: torch, onnx-fp32, onnx-int8, sklearn.")
    loaded_at: str | None = None
    dataset: str | None = Field(None, description="The catalogue (params.yaml dataset key) the version was trained on.")
    data_version: str | None = Field(
        None, description="The split the version was trained on: its DVC hash, else its content hash.")
    model_git_commit: str | None = Field(None, description="The commit of the code that trained the version.")
    serving_git_commit: str | None = Field(
        None, description="The commit of the code serving it (git HEAD, or PRODUCTCAT_CODE_VERSION).")
    labels: list[str] = Field([], description="Every label the version can answer.")
    low_confidence_threshold: float | None = Field(
        None, description="Answers whose top probability is below this are flagged `low_confidence`.")
    review_threshold: float | None = Field(
        None, description="Answers whose top probability is below this get no category (needs_review) and go to "
        "the review queue: the model card's, or the service's setting; null = no review routing.")
    training_metrics: dict[str, float] = {}
    card: dict[str, Any] = {}
    refused_versions: dict[str, str] = Field(
        {}, description="Versions that failed to load, self-test or serve (rolled back), and why."
    )
    last_error: str | None = None
    healthy: bool = Field(True, description="False while the serving version fails with nothing to fall back to.")
    failing: str | None = Field(None, description="Why the serving version is not healthy.")
    probation: ProbationInfo | None = Field(None, description="The serving version's first requests after a swap.")
    fallback_version: str | None = Field(
        None, description="The previous champion, kept in memory until the serving version has proven itself."
    )
    rolled_back_from: RollbackInfo | None = Field(None, description="The last version swapped out for failing.")


# ---- explanations (POST /explain, /predict?explain=true): the shapes ml/explain.py computes ----------------


class Span(BaseModel):
    start: int = Field(description="Offset of the word's first character in the field's `text`.")
    end: int = Field(description="Offset just past its last character.")
    text: str
    weight: float = Field(description="> 0 pushed towards the label, < 0 away from it (in logit units).")


class FieldExplanation(BaseModel):
    field: Literal["title", "brand", "price", "features", "description"]
    text: str = Field(description="The field as the model read it (cleaned; features joined with '; ').")
    spans: list[Span] = Field(description="Every word of `text`, in order, with its weight.")


class FeatureWeight(BaseModel):
    feature: str = Field(description="A word or word pair, a character n-gram, or a model token.")
    kind: Literal["word", "char", "token", "patch"]
    weight: float


class ImageMap(BaseModel):
    rows: int
    cols: int
    size: int = Field(description="Side of the square input the model saw, in pixels.")
    weights: list[list[float]] = Field(description="Per patch, row by row: the drop of the label's log-probability "
                                       "when the patch is greyed out (> 0: the patch supports the label).")


class Explanation(BaseModel):
    label: str = Field(description="The label explained.")
    method: Literal["linear-exact", "integrated-gradients", "occlusion", "late-fusion"] = Field(
        description="linear-exact: coefficient x TF-IDF value of each feature (exact); integrated-gradients: "
        "token attributions of a transformer; occlusion: the photo's patches (image family); late-fusion: the "
        "text model's exact word contributions, the photo's patches, and base_value / score of the stacking "
        "head over both.")
    base_value: float = Field(description="The label's score with no input (intercept, or the baseline input's).")
    score: float = Field(description="base_value plus every contribution: the label's logit.")
    fields: list[FieldExplanation]
    top_features: list[FeatureWeight] = Field(description="The strongest features either way, strongest first.")
    duration_ms: float
    image_map: ImageMap | None = Field(None, description="Photo families: the occlusion map of the photo.")
    modality_shares: dict[str, float] | None = Field(
        None, description="Photo families: the share of the decision that came from the text and from the photo.")


class ExplainBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"product": EXAMPLE_FASHION_PRODUCT}]})

    product: Product
    label: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_LABEL),
                     AfterValidator(str.strip)] | None = Field(
        None, description="Explain this label instead of the predicted one (it must be one the model knows).")


class ExplanationResponse(BaseModel):
    request_id: str = Field(description="Id of this explanation (logged with the model version).")
    model: ModelRef
    label: str
    probability: float = Field(description="The label's probability, as /predict gives it.")
    method: str
    top_k: list[LabelProbability] = Field(description="The model's top labels for the product, as /predict gives them.")
    explanation: Explanation


Prediction.model_rebuild()  # its `explanation` field refers to Explanation, defined above
PredictResponse.model_rebuild()
