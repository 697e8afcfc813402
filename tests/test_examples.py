"""Every example trains and passes its check; digits reaches its accuracy on held-out data."""

from __future__ import annotations

import numpy as np
import pytest

from proto2prod import Definition, NullProgress, Trained, fields, load_definition
from proto2prod.predictor import Predictor
from tests.conftest import EXAMPLES

# Held-out accuracy after the quick training (measured: digits 0.98, tabular 1.0). heavy's
# quick training is 3 steps, which only proves the plumbing: it must not fall below
# guessing (4 classes); its full training is test_heavy_trains_to_a_meaningful_accuracy.
QUICK_FLOOR = {"digits.py": 0.9, "tabular.py": 0.9, "heavy.py": 0.25}


@pytest.mark.parametrize("example", sorted(QUICK_FLOOR))
def test_example_trains_quickly_and_predicts_its_examples(example: str) -> None:
    definition = load_definition(EXAMPLES / example)
    trained = definition.model.train(NullProgress(), quick=True)
    classes = definition.model.outputs.classes  # type: ignore[attr-defined]
    assert trained.metrics["accuracy"] >= QUICK_FLOOR[example], trained.metrics
    assert trained.params
    outputs = Predictor(definition.model, trained.weights, "cpu").predict_batch(
        definition.model.examples()
    )
    assert all(out["label"] in classes for out in outputs)


def test_digits_held_out_accuracy_through_png(digits: Definition, digits_trained: Trained) -> None:
    """Held-out digits sent the way a browser sends them (base64 PNG) score >= 95 %."""
    from proto2prod.examples.digits import load_split

    _, x_test, _, y_test = load_split()
    items = [fields.Image.to_png_base64(image) for image in x_test]
    predictor = Predictor(digits.model, digits_trained.weights, "cpu")
    labels = [out["label"] for out in predictor.predict_batch(items)]
    accuracy = float(np.mean([label == str(y) for label, y in zip(labels, y_test, strict=True)]))
    assert accuracy >= 0.95, accuracy
    assert digits_trained.metrics["accuracy"] == pytest.approx(accuracy, abs=0.02)


def test_digits_reads_a_large_drawing(digits: Definition, digits_trained: Trained) -> None:
    """A person's drawing: 200x160, dark ink on white, off-centre. preprocess frames it."""
    from proto2prod.examples.digits import load_split

    _, x_test, _, y_test = load_split()
    predictor = Predictor(digits.model, digits_trained.weights, "cpu")
    hits = 0
    picks = [int(np.flatnonzero(y_test == d)[0]) for d in range(10)]
    for i in picks:
        ink = np.kron(x_test[i], np.ones((14, 14)))  # 112x112, blocky like a brush
        canvas = np.full((200, 160), 255.0)
        canvas[60:172, 20:132] = 255.0 - ink
        hits += predictor.predict(canvas.astype(int).tolist())["label"] == str(y_test[i])
    assert hits >= 9, f"{hits}/10 drawings read correctly"


@pytest.mark.slow
def test_heavy_trains_to_a_meaningful_accuracy() -> None:
    definition = load_definition(EXAMPLES / "heavy.py")
    trained = definition.model.train(NullProgress())
    assert trained.metrics["accuracy"] >= 0.9
    assert sum(p.numel() for p in definition.model.network().parameters()) == pytest.approx(
        2.8e6, rel=0.1
    )
