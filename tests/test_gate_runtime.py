"""The int8 tolerance rule of the gate: the fastest variant within `gate.max_int8_macro_f1_drop`
of torch's test macro-F1 serves; a variant beyond it is refused with its reason."""

from __future__ import annotations

from ml.gate import choose_runtime
from ml.params import load_params
from ml.settings import MLSettings
from tests.conftest import REPO_ROOT


def variants(torch: float, fp32: float, int8: float) -> dict[str, dict[str, float]]:
    return {"torch": {"macro_f1": torch}, "onnx-fp32": {"macro_f1": fp32}, "onnx-int8": {"macro_f1": int8}}


def test_int8_within_the_tolerance_serves() -> None:
    runtime, reasons = choose_runtime(variants(0.80, 0.80, 0.797), max_drop=0.005)
    assert runtime == "onnx-int8" and reasons[0].startswith("ACCEPT: onnx-int8")


def test_int8_beyond_the_tolerance_is_refused_and_fp32_serves() -> None:
    # The benchmark's model: int8 lost 2.6 points, fp32 matched torch.
    runtime, reasons = choose_runtime(variants(0.4643, 0.4643, 0.4381), max_drop=0.005)
    assert runtime == "onnx-fp32"
    assert reasons[0].startswith("REFUSE: onnx-int8 macro-F1 0.4381 vs torch 0.4643")
    assert reasons[1].startswith("ACCEPT: onnx-fp32")


def test_exactly_at_the_tolerance_is_accepted_and_both_exports_off_fall_back_to_torch() -> None:
    assert choose_runtime(variants(0.80, 0.80, 0.795), max_drop=0.005)[0] == "onnx-int8"
    assert choose_runtime(variants(0.80, 0.70, 0.70), max_drop=0.005)[0] == "torch"


def test_a_model_without_variants_gets_no_runtime_tag() -> None:
    assert choose_runtime({}, max_drop=0.005) == (None, [])


def test_the_tolerance_comes_from_params_yaml() -> None:
    params = load_params(MLSettings(project_root=REPO_ROOT))
    assert params.gate.max_int8_macro_f1_drop == 0.005
