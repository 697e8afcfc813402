"""`Predictor` is the one inference path: batched, ordered, validated, no pickle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from proto2prod import Definition, IncompatibleVersion, InvalidInput, Trained
from proto2prod.predictor import Predictor
from proto2prod.weights import load_safetensors, save_safetensors
from tests.compare import assert_same_outputs


@pytest.fixture(scope="module")
def predictor(digits: Definition, digits_quick: Trained) -> Predictor:
    return Predictor(digits.model, digits_quick.weights, "cpu")


def test_batch_keeps_order_and_matches_single_items(
    predictor: Predictor, digits: Definition
) -> None:
    items = digits.model.examples()
    batch = predictor.predict_batch(items)
    assert_same_outputs([predictor.predict(item) for item in items], batch)
    assert [out["label"] for out in batch] == ["0", "3", "7", "8"]
    assert_same_outputs(predictor.predict_batch(items[::-1]), batch[::-1])


def test_outputs_follow_the_label_encoding(predictor: Predictor, digits: Definition) -> None:
    out = predictor.predict(digits.model.examples()[0])
    assert set(out) == {"label", "scores"}
    assert len(out["scores"]) == 3 and out["label"] == max(out["scores"], key=out["scores"].get)


def test_invalid_item_is_reported_with_its_index(predictor: Predictor, digits: Definition) -> None:
    good = digits.model.examples()[0]
    with pytest.raises(InvalidInput) as caught:
        predictor.predict_batch([good, good, "not an image"])
    assert caught.value.index == 2 and caught.value.field == "image"
    with pytest.raises(InvalidInput, match="the list is empty"):
        predictor.predict_batch([])
    with pytest.raises(InvalidInput, match="a list"):
        predictor.predict_batch("abc")


def test_weights_round_trip_through_safetensors(
    tmp_path: Path, digits: Definition, digits_quick: Trained, predictor: Predictor
) -> None:
    path = tmp_path / "weights.safetensors"
    save_safetensors(digits_quick.weights, path)
    assert path.read_bytes()[:1] != b"\x80"  # not a pickle stream
    from_file = Predictor(digits.model, path, "cpu")
    items = digits.model.examples()
    assert from_file.predict_batch(items) == predictor.predict_batch(items)
    assert set(load_safetensors(path)) == set(digits_quick.weights)


def test_weights_that_do_not_fit_are_refused(digits: Definition, digits_quick: Trained) -> None:
    weights = dict(digits_quick.weights)
    weights.pop(next(iter(weights)))
    with pytest.raises(IncompatibleVersion, match="do not fit Digits.network"):
        Predictor(digits.model, weights, "cpu")
    wrong = {k: torch.zeros(1) for k in digits_quick.weights}
    with pytest.raises(IncompatibleVersion):
        Predictor(digits.model, wrong, "cpu")


def test_forward_runs_in_inference_mode(predictor: Predictor, digits: Definition) -> None:
    seen: list[bool] = []
    handle = predictor.network.register_forward_hook(
        lambda *_: seen.append(torch.is_inference_mode_enabled())
    )
    try:
        predictor.predict_batch(digits.model.examples())
    finally:
        handle.remove()
    assert seen == [True]


def test_device_defaults_to_cpu_without_cuda(digits: Definition, digits_quick: Trained) -> None:
    predictor = Predictor(digits.model, digits_quick.weights)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert predictor.device.type == expected
    assert predictor.dtype == torch.float32
