"""Every field kind answers every question in its own module: the spec round trip of every
parameter, named fields, the new output kinds (their checks, schemas, comparisons and
statistics), and batching with dtypes kept and ragged token ids padded with a mask."""

from __future__ import annotations

import inspect
import json
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch
from torch import nn

import proto2prod
from proto2prod import fields
from proto2prod.batching import collate
from proto2prod.definition import check_definition
from proto2prod.errors import DefinitionError, InvalidInput
from proto2prod.predictor import Predictor

# Every kind, built with every parameter set to something other than its default.
NON_DEFAULT: list[fields.Field] = [
    fields.Image(height=5, width=7, channels=3, max_side=99, name="img"),
    fields.Tensor(shape=[None, 3], dtype="int64", name="ids"),
    fields.Table(features=["a", "b"], name="row"),
    fields.Text(max_length=12, name="words"),
    fields.Number(name="n"),
    fields.Label(classes=["x", "y", "z"], top_k=2, name="l"),
    fields.Boxes(classes=["cat"], max_boxes=3, min_score=0.25, name="b"),
    fields.Record(
        {"image": fields.Image(height=2, width=2), "hint": fields.Number()}, name="inputs"
    ),
]


@pytest.mark.parametrize("field", NON_DEFAULT, ids=lambda f: f.kind)
def test_the_spec_round_trips_every_parameter(field: fields.Field) -> None:
    """A remote UI rebuilds each field from its spec: every constructor parameter (but the
    description, which never decides whether two versions fit) must come back as it was."""
    rebuilt = fields.from_spec(json.loads(json.dumps(field.spec())))
    assert rebuilt.spec() == field.spec()
    assert type(rebuilt) is type(field)
    parameters = set(inspect.signature(type(field).__init__).parameters) - {"self", "description"}
    for parameter in parameters:
        if parameter == "fields":
            assert rebuilt.keys() == field.keys()  # type: ignore[attr-defined]
        else:
            assert getattr(rebuilt, parameter) == getattr(field, parameter), parameter


def test_defaults_leave_the_specs_of_registered_versions_unchanged() -> None:
    """Versions registered before max_side and dtype were recorded must still fit."""
    assert fields.Image(height=8, width=8).spec() == {
        "kind": "image",
        "name": "image",
        "height": 8,
        "width": 8,
        "channels": 1,
    }
    assert fields.Tensor(shape=[2]).spec() == {"kind": "tensor", "name": "tensor", "shape": [2]}


RECORD = fields.Record({"image": fields.Image(height=2, width=2), "hint": fields.Number()})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"image": [[0, 1], [2, 3]], "hint": "x"},
            "inputs[1].hint: got a string, expected a finite number",
        ),
        ({"image": [[0, 1], [2, 3]]}, "inputs[1].hint: it is missing"),
        ({"image": [[0, 1], [2, 3]], "hint": 1, "other": 2}, "inputs[1].other: no such key"),
        ({"image": "not base64!", "hint": 1}, "inputs[1].image: the string is not valid base64"),
        ([1, 2], "inputs[1] (field 'record'): got an array; expected an object with the keys"),
    ],
)
def test_named_inputs_name_the_item_and_the_key(value: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        RECORD.decode(value, index=1)
    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.status == 422


def test_named_schema_is_a_flat_object_every_key_required() -> None:
    schema = RECORD.json_schema()
    assert schema["required"] == ["image", "hint"] and schema["additionalProperties"] is False
    assert "$ref" not in json.dumps(schema)
    jsonschema.validate({"image": [[0, 1], [2, 3]], "hint": 1.5}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"image": [[0, 1], [2, 3]]}, schema)
    decoded = RECORD.decode({"image": [[0, 1], [2, 3]], "hint": 2}, index=0)
    assert decoded["image"].shape == (2, 2, 1) and decoded["hint"] == 2.0


def test_named_keys_must_be_identifiers_and_parts_plain_fields() -> None:
    with pytest.raises(DefinitionError, match="not a valid key"):
        fields.Record({"an image": fields.Number()})
    with pytest.raises(DefinitionError, match="must be a field"):
        fields.Record({"inner": RECORD})


def test_int64_tensors_take_integers_only() -> None:
    ids = fields.Tensor(shape=[None], dtype="int64")
    assert ids.decode([3, 1, 4]).dtype == np.int64
    for bad, problem in (([1.5], "not integers"), ([], "empty"), ("12", "got a string")):
        with pytest.raises(InvalidInput, match=problem):
            ids.decode(bad)
    assert fields.Tensor(shape=[None]).json_schema()["minItems"] == 1
    assert ids.json_schema()["items"]["type"] == "integer"


def test_output_kinds_encode_check_and_describe_themselves() -> None:
    vector = fields.Tensor(shape=[3])
    assert vector.encode(torch.tensor([1.0, 2.0, 3.0])) == [1.0, 2.0, 3.0]
    assert vector.output_problem([1.0, 2.0]) and vector.output_problem([1.0, float("nan"), 2.0])
    assert vector.output_problem([0.0, 1.0, 2.0]) is None

    mask = fields.Image(height=2, width=3)
    png = mask.encode(torch.tensor([[0.0, 255.0, 0.0], [255.0, 0.0, 255.0]]))
    assert mask.output_problem(png) is None and mask.output_problem(5)
    assert mask.decode(png)[:, :, 0].tolist() == [[0, 255, 0], [255, 0, 255]]
    assert mask.output_shape_problem((1, 2, 3)) is None and mask.output_shape_problem((4, 4))

    text = fields.Text(max_length=5)
    assert text.output_problem("hello") is None and text.output_problem("too long")
    with pytest.raises(DefinitionError, match="write a postprocess"):
        text.encode(torch.zeros(1))

    boxes = fields.Boxes(classes=["cat", "dog"], max_boxes=2, min_score=0.5)
    rows = torch.tensor([[0, 0, 4, 4, 0.9, 1], [1, 1, 2, 2, 0.2, 0], [2, 2, 6, 6, 0.7, 0]])
    found = boxes.encode(rows)
    assert [(b["label"], b["score"]) for b in found] == [("dog", 0.9), ("cat", 0.7)]
    assert boxes.output_problem(found) is None
    assert boxes.output_problem([{"label": "cow", "score": 1, "box": [0, 0, 1, 1]}])
    assert boxes.output_problem([{"label": "cat", "score": 1, "box": [2, 0, 1, 1]}])
    jsonschema.validate(found, boxes.json_schema())


def test_each_output_kind_says_what_agree_means() -> None:
    vector = fields.Tensor(shape=[2])
    assert vector.compare([1.0, 0.0], [2.0, 0.01]).agree  # the same direction
    assert not vector.compare([1.0, 0.0], [0.0, 1.0]).agree
    assert vector.compare([1.0, 0.0], [0.0, 1.0]).delta == pytest.approx(1.0)

    image = fields.Image(height=2, width=2)
    black, white = image.to_png_base64(np.zeros((2, 2))), image.to_png_base64(np.full((2, 2), 255))
    assert image.compare(black, black).agree and image.compare(black, black).delta == 0
    assert not image.compare(black, white).agree and image.compare(black, white).delta == 1.0

    text = fields.Text()
    assert text.compare("abc", "abc").agree and not text.compare("abc", "abd").agree
    assert 0 < text.compare("abc", "abd").delta < 1

    boxes = fields.Boxes(classes=["cat", "dog"])
    one = [{"label": "cat", "score": 0.9, "box": [0, 0, 10, 10]}]
    near = [{"label": "cat", "score": 0.8, "box": [1, 1, 10, 10]}]
    assert boxes.compare(one, near).agree and boxes.compare(one, near).delta < 0.2
    assert not boxes.compare(one, [{**near[0], "label": "dog"}]).agree
    assert not boxes.compare(one, near + near).agree  # an extra box
    assert boxes.compare([], []).agree

    named = fields.Record({"n": fields.Number(), "t": fields.Text()})
    assert named.compare({"n": 1.0, "t": "a"}, {"n": 1.001, "t": "a"}).agree
    assert not named.compare({"n": 1.0, "t": "a"}, {"n": 1.0, "t": "b"}).agree


def test_statistics_are_each_kinds_and_named_parts_are_prefixed() -> None:
    named = fields.Record({"hint": fields.Number(), "words": fields.Text()})
    assert named.input_statistics({"hint": 2, "words": "abc"}, None, "input") == {
        "input.hint.value": 2.0,
        "input.words.length": 3.0,
    }
    out = fields.Record({"v": fields.Tensor(shape=[2]), "b": fields.Boxes(classes=["c"])})
    found = out.output_statistics({"v": [3.0, 4.0], "b": []}, "output")
    assert found == {
        "output.v.norm": 5.0,
        "output.v.mean": 3.5,
        "output.b.count": 0.0,
        "output.b.mean_score": 0.0,
    }
    image = fields.Image(height=2, width=2)
    assert image.input_statistics([[0, 255], [255, 0]], None, "input") == {
        "input.mean_intensity": 127.5
    }


def test_collate_stacks_keeps_dtypes_and_pads_ragged_ids_with_a_mask() -> None:
    batch = collate([torch.tensor([5, 6, 7]), torch.tensor([8])])
    (ids,) = batch.args
    assert ids.dtype == torch.int64 and ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.masks["mask"].tolist() == [[True, True, True], [True, False, False]]
    named = collate(
        [
            {"ids": torch.tensor([1, 2]), "x": torch.zeros(2, 2)},
            {"ids": torch.tensor([3]), "x": torch.ones(2, 2)},
        ]
    )
    assert named.kwargs["x"].shape == (2, 2, 2) and "ids_mask" in named.masks
    moved = named.to(torch.device("cpu"), torch.float16)
    assert moved.kwargs["x"].dtype == torch.float16 and moved.kwargs["ids"].dtype == torch.int64
    with pytest.raises(DefinitionError, match="only 1-d ones"):
        collate([torch.zeros(2, 2), torch.zeros(3, 2)])


class Tagger(proto2prod.Model):
    """Token ids of any length in, a vector and a label out, by name."""

    name = "tagger"
    inputs = {"ids": fields.Tensor(shape=[None], dtype="int64"), "scale": fields.Number()}
    outputs = {"vector": fields.Tensor(shape=[4]), "kind": fields.Label(classes=["a", "b"])}

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 2)

        def forward(
            self, ids: torch.Tensor, scale: torch.Tensor, ids_mask: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            assert ids.dtype == torch.int64  # ids are never cast to float
            weights = ids_mask.unsqueeze(-1).float()
            pooled = (self.embed(ids) * weights).sum(1) / weights.sum(1) * scale[:, None]
            return pooled, self.head(pooled)  # a tuple, in the outputs' order

    def network(self) -> nn.Module:
        return self.Net()

    def examples(self) -> list[Any]:
        return [{"ids": [1, 2, 3], "scale": 1.0}, {"ids": [4], "scale": 2.0}]


def test_a_named_model_with_ragged_ids_runs_padded_and_keyword_called() -> None:
    model = Tagger()
    check_definition(model)
    predictor = Predictor(model, model.network().state_dict(), "cpu")
    both = predictor.predict_batch(model.examples())
    alone = [predictor.predict(item) for item in model.examples()]
    for together, single in zip(both, alone, strict=True):  # padding never changes an answer
        assert set(together) == {"vector", "kind"}
        assert np.allclose(together["vector"], single["vector"], atol=1e-6)
    outcome = predictor.predict_each([{"ids": [1.5], "scale": 1}, model.examples()[0]])
    assert isinstance(outcome[0], InvalidInput) and outcome[0].key == "ids"
    assert "inputs[0].ids: it holds numbers that are not integers" in str(outcome[0])


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("return self.Net()", "return nn.Linear(1, 1)", "`network()` fails on a batch"),
        (
            "return pooled, self.head(pooled)",
            "return pooled",
            "`network()` must return a dict keyed by the output names ['vector', 'kind']",
        ),
        (
            "return pooled, self.head(pooled)",
            "return {'vector': pooled}",
            "network() returned a dict without the output(s) ['kind']",
        ),
        ('"ids": [4], "scale": 2.0', '"ids": [4]', "`examples()[1]` does not fit `inputs`"),
    ],
)
def test_the_load_check_names_what_a_named_model_breaks(old: str, new: str, rule: str) -> None:
    source = inspect.getsource(Tagger)
    assert old in source
    namespace: dict[str, Any] = {
        "proto2prod": proto2prod,
        "fields": fields,
        "nn": nn,
        "torch": torch,
        "Any": Any,
    }
    exec(compile(source.replace(old, new), "tagger.py", "exec"), namespace)  # noqa: S102
    with pytest.raises(DefinitionError) as caught:
        check_definition(namespace["Tagger"]())
    assert rule in str(caught.value), str(caught.value)


def test_a_label_encodes_a_whole_batch_as_it_encodes_each_row() -> None:
    """The Predictor hands a batch to `encode_rows` at once (one softmax, one topk); the
    answers are the per-row ones, to the last digit."""
    import torch

    label = fields.Label(classes=[str(i) for i in range(10)])
    logits = torch.randn(33, 10, generator=torch.Generator().manual_seed(0))
    assert label.encode_rows(logits) == [label.encode(row) for row in logits]
    assert fields.Number().encode_rows(torch.tensor([[0.5], [2.0]])) == [
        fields.Number().encode(torch.tensor([0.5])),
        fields.Number().encode(torch.tensor([2.0])),
    ]
