"""Typed view of params.yaml, the one file DVC stages and the CLI share."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, model_validator

from ml.settings import MLSettings


class LabelSpec(BaseModel):
    """Where the label comes from: one column, or a path of columns, or one
    column holding a whole path ("A >> B >> C")."""

    column: str | None = Field(None, description="Single column holding the label or a path string.")
    columns: list[str] | None = Field(None, description="Columns forming a path, root first.")
    separator: str | None = Field(None, description="Splits a path string held in `column`.")
    json_list: bool = Field(False, description="The cell is a JSON list whose first item is the path.")
    level: int = Field(-1, description="Path level used as the training target (0 = root, -1 = leaf).")
    min_depth: int = Field(1, description="Shorter paths count as unlabelled.")

    @model_validator(mode="after")
    def _one_source(self) -> LabelSpec:
        if (self.column is None) == (self.columns is None):
            raise ValueError("label needs exactly one of `column` or `columns`")
        return self


class ImageJoin(BaseModel):
    """A table linking products to their photos, one row per photo (a product may have several)."""

    path: str = Field(description="CSV table (.gz allowed); '{raw_data_dir}' expands as in the catalogue path.")
    product_column: str = Field(description="Column holding the product id (the catalogue's `id`).")
    image_column: str = Field(description="Column holding the photo's key, which fills `{id}` in `member`.")
    order_column: str | None = Field(None, description="Photos of a product ranked by this column, compared as "
                                     "text; null: table order. The first good photo is kept.")


class ImageSource(BaseModel):
    """Where a dataset's product photos are and how a row finds its photo (ml/images.py)."""

    archive: str = Field(description="tar / tar.gz archive or a folder of photos; '{raw_data_dir}' expands.")
    member: str = Field("images/{id}.jpg", description="A photo's path inside the archive: `{id}` is the "
                        "product id, or the join table's image key.")
    join: ImageJoin | None = Field(None, description="Link table when photos are not named by product id.")

    @model_validator(mode="after")
    def _one_placeholder(self) -> ImageSource:
        if self.member.count("{id}") != 1:
            raise ValueError("images.member needs exactly one '{id}' placeholder")
        return self


class DatasetSpec(BaseModel):
    format: Literal["amazon2018", "csv", "parquet", "rakuten"]
    path: str = Field(description="Catalogue file; '{raw_data_dir}' expands to settings.raw_data_dir.")
    labels_path: str | None = Field(None, description="Rakuten only: the label CSV joined on row index.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical field -> source column (id, title, description, brand, price, image).",
    )
    feature_columns: list[str] = Field(
        default_factory=list, description="Attribute columns kept as 'column: value' features."
    )
    label: LabelSpec | None = Field(None, description="Label source (amazon2018/rakuten have fixed ones).")
    id_pattern: str | None = Field(None, description="Regex whose first group extracts the id from the id column.")
    strip: dict[str, str] = Field(
        default_factory=dict, description="Field -> regex removed from it (text that leaks location or label)."
    )
    allowed_labels: list[str] | None = Field(None, description="Closed label set; others are quarantined.")
    csv_lineterminator: str | None = Field(None, description="Pass '\\n' when fields hold bare '\\r'.")
    images: ImageSource | None = Field(None, description="Product photos; the row's `image` becomes the stored "
                                       "photo's path (or null). Without it, `image` is the catalogue's reference.")

    def resolved_path(self, settings: MLSettings, value: str | None = None) -> Path:
        raw = (value or self.path).format(raw_data_dir=settings.raw_data_dir)
        return settings.resolve(Path(raw))


class ImageLimits(BaseModel):
    """What a product photo must satisfy to be kept (ml/images.py); a failing photo is dropped, never its row."""

    max_pixels: int = Field(25_000_000, gt=0, description="More pixels (width x height, read from the header "
                            "before decoding): too_large, a decompression-bomb guard.")
    max_bytes: int = Field(10_000_000, gt=0, description="A larger file is too_large, refused unread.")
    min_side: int = Field(8, gt=0, description="A narrower or shorter photo is too_small.")


class IngestParams(BaseModel):
    dataset: str = Field(description="Key of `datasets` that `productcat ingest` reads by default.")
    chunk_rows: int = Field(20_000, gt=0, description="Rows per chunk: bounds memory whatever the file size.")
    max_title_chars: int = Field(500, gt=0)
    max_description_chars: int = Field(20_000, gt=0)
    max_feature_chars: int = Field(5_000, gt=0, description="All features joined.")
    engine: Literal["pandas", "spark"] = Field(
        "pandas", description="pandas: stream chunks in this process; spark: the same checks via mapInPandas."
    )
    images: ImageLimits = ImageLimits()


class SplitParams(BaseModel):
    # Test membership is a pure function of (salt, id, fractions): changing any
    # of these re-deals every product, so they are frozen once a model ships.
    salt: str = "productcat-v1"
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _fractions(self) -> SplitParams:
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must leave room for train")
        return self


class BaselineParams(BaseModel):
    c: float = Field(10.0, gt=0)
    max_features: int = Field(200_000, gt=0)


class TransformerParams(BaseModel):
    base_model: str | None = None
    max_length: int = Field(64, gt=8)
    batch_size: int = Field(32, gt=0)
    epochs: int = Field(3, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    patience: int = Field(1, gt=0)
    length_bucketing: bool = True
    freeze_embeddings: bool = False
    frozen_layers: int = Field(0, ge=0)


class ImageParams(BaseModel):
    """The ``image`` family (frozen EfficientNet-Lite0 embeddings + a logistic-regression head) and the
    image half of ``fusion`` (whose text half is the baseline, with ``baseline:``'s settings)."""

    size: Literal[112, 224] = Field(224, description="Input side in pixels: 224 as the weights were trained, "
                                    "112 for a four times cheaper embedding.")
    batch_size: int = Field(64, gt=0, description="Photos decoded and embedded at once (bounds memory).")
    c: float = Field(0.5, gt=0, description="Inverse regularisation of the head over the standardised embedding.")
    stack_c: float = Field(1.0, gt=0, description="fusion: inverse regularisation of the stacking head.")


class TrainParams(BaseModel):
    family: Literal["baseline", "transformer", "image", "fusion"] = "baseline"
    seed: int = 13
    max_train_samples: int | None = Field(None, gt=0)
    max_validation_samples: int | None = Field(2000, gt=0)
    class_weighting: Literal["none", "balanced", "sqrt"] = "balanced"
    low_confidence_max_accuracy: float = Field(
        0.5, ge=0, le=1, description="Answers flagged low-confidence are those whose validation peers "
        "(top probability below the threshold) were right at most this often.")
    baseline: BaselineParams = BaselineParams()
    transformer: TransformerParams = TransformerParams()
    image: ImageParams = ImageParams()


class EvaluateParams(BaseModel):
    rare_class_max_support: int = Field(10, ge=0)
    latency_items: int = Field(100, gt=0)


class ExportParams(BaseModel):
    """Inference variants of a transformer, written beside its weights (ml/export.py)."""

    enabled: bool = Field(True, description="Export the transformer to ONNX at training time.")
    opset: int = Field(18, ge=14, description="ONNX opset of the exported graph.")
    int8: bool = Field(True, description="Also write a dynamically quantised int8 variant.")
    check_rows: int = Field(64, gt=0, description="Validation rows on which the export must match torch.")
    max_abs_diff: float = Field(1e-3, gt=0, description="Largest probability difference fp32 ONNX vs torch.")


class GateParams(BaseModel):
    min_macro_f1: float = Field(0.3, ge=0, le=1)
    min_accuracy: float = Field(0.6, ge=0, le=1)
    max_macro_f1_drop: float = Field(0.005, ge=0)
    max_class_f1_drop: float = Field(0.2, ge=0)
    class_min_support: int = Field(20, ge=0)
    max_latency_ms: float = Field(250, gt=0)
    max_int8_macro_f1_drop: float = Field(
        0.005, ge=0, description="An int8 variant serves only if its test macro-F1 is at most this below torch's."
    )


class MonitorThresholds(BaseModel):
    """When a drift signal fires (see docs/monitoring.md): distances at or above, share changes, falls."""

    title_length: float = Field(0.25, gt=0, description="Normalised Wasserstein distance of title length.")
    description_length: float = Field(0.25, gt=0, description="... of non-empty description length.")
    price: float = Field(0.25, gt=0, description="... of log(1 + price).")
    oov_rate: float = Field(0.25, gt=0, description="... of the per-product out-of-vocabulary share.")
    title_text: float = Field(0.70, gt=0.5, le=1, description="ROC AUC of the reference-vs-current title classifier.")
    predicted_label: float = Field(0.20, gt=0, description="Jensen-Shannon distance of the predicted-label mix.")
    description_empty: float = Field(0.15, gt=0, le=1, description="Change of the share with no description.")
    brand_empty: float = Field(0.15, gt=0, le=1)
    price_missing: float = Field(0.15, gt=0, le=1)
    non_ascii: float = Field(0.15, gt=0, le=1, description="Change of the share with a non-ASCII letter.")
    confidence_drop: float = Field(0.10, gt=0, le=1, description="Fall of the mean top-1 probability.")
    accuracy_drop: float = Field(0.10, gt=0, le=1, description="Fall of accuracy on requests with feedback.")
    macro_f1_drop: float = Field(0.15, gt=0, le=1)


class RetrainParams(BaseModel):
    min_signals: int = Field(2, ge=1, description="Input/prediction signals that must fire together to retrain.")


class MonitorParams(BaseModel):
    window_hours: float = Field(24, gt=0, description="Current window: requests of the last N hours ...")
    window_rows: int = Field(5000, gt=0, description="... at most the newest N of them.")
    min_rows: int = Field(100, gt=0, description="A smaller window gets no verdict and never a retrain.")
    reference_rows: int = Field(5000, gt=0, description="Training rows sampled as the reference.")
    seed: int = 13
    min_values: int = Field(30, gt=1, description="Values needed on each side to compare a distribution.")
    label_min_share: float = Field(0.03, ge=0, lt=1, description="Rarer predicted labels are pooled as '(other)'.")
    min_feedback_rows: int = Field(50, gt=0, description="Labelled requests needed before quality is judged.")
    thresholds: MonitorThresholds = MonitorThresholds()
    retrain: RetrainParams = RetrainParams()


class ReviewParams(BaseModel):
    """Calibrated probabilities and the threshold below which an answer goes to human review
    (ml/calibration.py, ml/review_threshold.py); both are fitted on validation and stored in the model card."""

    enabled: bool = Field(True, description="false: no review threshold (every answer is given).")
    calibrate: bool = Field(True, description="Fit a temperature on validation; the service serves its probabilities.")
    target_precision: float = Field(
        0.98, gt=0, le=1, description="Answered validation products must be right at least this often.")
    min_answered_rows: int = Field(
        50, gt=0, description="A threshold must answer at least this many validation products to count.")
    confidence: float | None = Field(
        None, gt=0.5, lt=1, description="Require the precision's one-sided Wilson lower bound at this level to reach "
        "the target, not the validation estimate (null: the estimate).")
    threshold: float | None = Field(
        None, ge=0, le=1, description="A fixed threshold instead of the chosen one (null: chosen on validation).")


class ShadowParams(BaseModel):
    """When the challenger's live record (api/shadow.py, monitoring/shadow.py) lets it take the champion alias."""

    window_hours: float = Field(168, gt=0, description="The report reads shadow answers of the last N hours.")
    min_requests: int = Field(200, ge=1, description="Requests both versions answered, needed for any verdict.")
    min_labelled: int = Field(100, ge=1, description="Of those, requests with /feedback, needed for any verdict.")
    max_accuracy_drop: float = Field(
        0.01, ge=0, le=1, description="Promote only if the lower confidence bound of challenger minus champion "
        "accuracy (on the labelled requests) is at least minus this.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of that interval (paired, Newcombe).")
    top_confusions: int = Field(10, ge=1, description="Champion -> challenger label pairs listed in the report.")
    latency_rows: int = Field(20_000, ge=1, description="Newest products whose latencies give the percentiles.")


class ScoreParams(BaseModel):
    """Batch scoring (`productcat score`, the `batch_score` DAG)."""

    engine: Literal["pandas", "spark"] = Field(
        "pandas", description="pandas: one process; spark: executors on PRODUCTCAT_SPARK_MASTER.")


class Params(BaseModel):
    datasets: dict[str, DatasetSpec]
    ingest: IngestParams
    score: ScoreParams = ScoreParams()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    export: ExportParams = ExportParams()
    evaluate: EvaluateParams = EvaluateParams()
    gate: GateParams = GateParams()
    monitor: MonitorParams = MonitorParams()
    review: ReviewParams = ReviewParams()
    shadow: ShadowParams = ShadowParams()

    def dataset(self, name: str | None = None) -> tuple[str, DatasetSpec]:
        key = name or self.ingest.dataset
        if key not in self.datasets:
            known = ", ".join(sorted(self.datasets))
            raise KeyError(f"unknown dataset {key!r}; params.yaml defines: {known}")
        return key, self.datasets[key]


def load_params(settings: MLSettings) -> Params:
    path = settings.resolve(settings.params_file)
    with path.open(encoding="utf-8") as handle:
        return Params.model_validate(yaml.safe_load(handle))
