"""EfficientNet-Lite0: the packaged ImageNet weights load strictly and behave like a trained network."""

from __future__ import annotations

import math
import tarfile

import pytest
import torch
from PIL import Image

from ml.models.efficientnet_lite import EMBEDDING_DIM, EfficientNetLite0, load_pretrained, normalise, prepare
from tests.conftest import SAMPLE_DIR


@pytest.fixture(scope="module")
def model() -> EfficientNetLite0:
    torch.manual_seed(0)
    return load_pretrained()


def _entropy(logits: torch.Tensor) -> float:
    p = logits.softmax(-1)
    return float(-(p * p.log()).sum(-1).mean())


def test_every_packaged_tensor_loads_strictly(model):
    from ml.models.efficientnet_lite import pretrained_weights_path

    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    assert len(state) == 296 == len(model.state_dict())
    result = EfficientNetLite0().load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(p.numel() for p in model.parameters()) == 4_652_008
    assert not model.training


def test_shapes_for_any_image_size(model):
    with torch.inference_mode():
        for size in ((224, 224), (80, 60), (97, 131)):
            x = normalise(torch.rand(2, 3, *size))
            assert model(x).shape == (2, 1000)
            assert model.features(x).shape == (2, EMBEDDING_DIM)


def test_prepare_pads_to_a_white_square_and_normalises():
    tall = Image.new("RGB", (60, 80), (0, 0, 0))
    batch = prepare([tall, Image.new("L", (10, 10), 128)], size=32)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.float32
    assert torch.all(batch[0, :, :, 0] == 1.0) and torch.all(batch[0, :, 16, 8:24] == -1.0)  # white sides, black photo
    assert torch.allclose(batch[1], torch.full((3, 32, 32), 128 / 255 * 2 - 1), atol=1e-3)  # grey -> RGB


def test_flat_grey_is_uniform_and_a_photo_is_not(model):
    with torch.inference_mode():
        grey = _entropy(model(normalise(torch.full((1, 3, 224, 224), 0.5))))
        with tarfile.open(SAMPLE_DIR / "fashion_images.tar.gz") as tar:
            member = next(m for m in tar if m.isfile())
            image = Image.open(tar.extractfile(member))  # type: ignore[arg-type]
            photo = _entropy(model(prepare([image])))
    assert grey > 0.999 * math.log(1000)  # zero input after normalisation: every class equally likely
    assert photo < grey - 1.0, f"a real photo should be recognised (entropy {photo:.2f} vs {grey:.2f})"


def test_eval_is_deterministic_and_training_mode_is_not(model):
    x = normalise(torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(1)))
    with torch.inference_mode():
        assert torch.equal(model.features(x), model.features(x))
    trainable = load_pretrained().train()
    torch.manual_seed(0)
    first = trainable(x)
    torch.manual_seed(1)
    assert not torch.allclose(first, trainable(x))  # dropout and stochastic depth act in training only


def test_symmetric_padding_loads_the_same_weights():
    tf_model, symmetric = load_pretrained(padding="tf"), load_pretrained(padding="symmetric")
    x = normalise(torch.rand(1, 3, 224, 224))
    with torch.inference_mode():
        a, b = tf_model.features(x), symmetric.features(x)
    assert a.shape == b.shape and not torch.equal(a, b)
