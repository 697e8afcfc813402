"""Fields validate JSON values with messages naming the field, the problem and what fits."""

from __future__ import annotations

import base64
import io
import math

import jsonschema
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from proto2prod import DefinitionError, InvalidInput, fields

IMAGE = fields.Image(height=8, width=8, channels=1, name="image")
RGB = fields.Image(height=4, width=4, channels=3, name="photo")


def png(array: np.ndarray, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    PILImage.fromarray(array.astype(np.uint8)).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def error(field: fields.Field, value: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        field.decode(value, index=3)
    return caught.value


class TestImage:
    def test_nested_list_2d_and_3d(self) -> None:
        assert IMAGE.decode([[0, 255], [10, 20]]).shape == (2, 2, 1)
        rgb = IMAGE.decode([[[255, 0, 0], [0, 255, 0]]])
        assert rgb.shape == (1, 2, 1)
        assert rgb[0, 0, 0] == pytest.approx(0.299 * 255, abs=0.01)

    def test_png_with_and_without_data_url_prefix_match_the_list(self) -> None:
        pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
        plain = IMAGE.decode(png(pixels))
        prefixed = IMAGE.decode("data:image/png;base64," + png(pixels))
        listed = IMAGE.decode(pixels.tolist())
        assert np.array_equal(plain, listed) and np.array_equal(prefixed, listed)

    def test_jpeg_is_accepted_and_grey_goes_to_rgb(self) -> None:
        pixels = np.full((4, 4, 3), 200, dtype=np.uint8)
        assert RGB.decode(png(pixels, "JPEG")).shape == (4, 4, 3)
        assert RGB.decode([[100, 100], [100, 100]]).shape == (2, 2, 3)

    def test_to_png_base64_round_trips(self) -> None:
        pixels = np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.float32)
        assert np.array_equal(IMAGE.decode(fields.Image.to_png_base64(pixels))[:, :, 0], pixels)

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            ("not base64!!", "not valid base64"),
            (base64.b64encode(b"hello world, no image").decode(), "not a PNG or JPEG"),
            ([[1, 2], [3]], "uneven lengths"),
            ([["a", "b"]], "not numbers"),
            ([[True, False]], "not numbers"),
            ([[1, 2, 300]], "range from 1 to 300"),
            ([[-1, 2]], "range from -1 to 2"),
            ([[math.nan, 1]], "NaN, infinite"),
            ([[1e39, 1]], "out-of-range"),
            ([], "empty"),
            ({"pixels": []}, "got an object"),
            (None, "got null"),
            (7, "got an integer"),
            ([[[1, 2]]], "shape [1, 1, 2]"),
            ([[[[1]]]], "shape [1, 1, 1, 1]"),
        ],
    )
    def test_bad_values_name_field_index_problem_and_expectation(
        self, value: object, problem: str
    ) -> None:
        exc = error(IMAGE, value)
        assert problem in exc.problem
        assert exc.field == "image" and exc.index == 3
        assert str(exc).startswith("inputs[3] (field 'image'): ")
        assert "base64 PNG/JPEG" in exc.expected

    def test_gif_is_refused(self) -> None:
        assert "GIF" in error(IMAGE, png(np.zeros((4, 4)), "GIF")).problem

    def test_huge_dimensions_are_refused_before_decoding_pixels(self) -> None:
        small = fields.Image(height=8, width=8, max_side=16)
        assert "17x1" in error(small, [[0]] * 17).problem
        assert "32x32" in error(small, png(np.zeros((32, 32)))).problem

    def test_fit_resizes_by_area(self) -> None:
        big = np.zeros((16, 16, 1), dtype=np.float32)
        big[:8, :8] = 255
        small = IMAGE.fit(big)
        assert small.shape == (8, 8, 1)
        assert small[0, 0, 0] == pytest.approx(255) and small[7, 7, 0] == pytest.approx(0)

    def test_bad_declaration(self) -> None:
        with pytest.raises(DefinitionError, match="channels must be 1 or 3"):
            fields.Image(height=8, width=8, channels=2)


class TestTensorTableTextNumber:
    def test_tensor_shape(self) -> None:
        field = fields.Tensor(shape=[2, 3], name="x")
        assert field.decode([[1, 2, 3], [4, 5, 6]]).shape == (2, 3)
        assert "got shape [3, 2]" in error(field, [[1, 2], [3, 4], [5, 6]]).problem

    def test_table_object_or_list(self) -> None:
        field = fields.Table(features=["a", "b"], name="row")
        assert field.decode({"b": 2, "a": 1}).tolist() == [1, 2]
        assert field.decode([1, 2.5]).tolist() == [1, 2.5]
        assert error(field, {"a": 1}).problem == "missing feature 'b'"
        assert error(field, {"a": 1, "b": 2, "c": 3}).problem == "unknown feature 'c'"
        assert error(field, [1]).problem == "got a list of 1 values"
        assert "feature 'b' is a string" in error(field, {"a": 1, "b": "2"}).problem
        assert "feature 'a' is a boolean" in error(field, [True, 1]).problem
        assert "not a finite number" in error(field, [math.inf, 1]).problem

    def test_text_and_number(self) -> None:
        text = fields.Text(max_length=5)
        assert text.decode("hello") == "hello"
        assert "6 characters" in error(text, "hello!").problem
        assert "got an integer" in error(text, 5).problem
        number = fields.Number(name="price")
        assert number.decode(3) == 3.0
        assert "got a boolean" in error(number, True).problem

    def test_label_cannot_be_an_input(self) -> None:
        with pytest.raises(DefinitionError, match="cannot be used as an input"):
            fields.Label(classes=["a", "b"]).decode("a")


class TestOutputs:
    def test_label_top_k_scores(self) -> None:
        field = fields.Label(classes=["a", "b", "c"], top_k=2)
        out = field.encode(torch.tensor([0.0, 3.0, 1.0]))
        assert out["label"] == "b"
        assert list(out["scores"]) == ["b", "c"]
        assert sum(out["scores"].values()) < 1.0
        assert field.output_shape_problem((3,)) is None
        assert "3 logits per item" in (field.output_shape_problem((4,)) or "")

    def test_number_output(self) -> None:
        assert fields.Number().encode(torch.tensor([2.5])) == 2.5
        assert fields.Number().output_shape_problem((2,)) is not None


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [
        (IMAGE, [[0, 1], [2, 3]], [[0, 1], [2, "x"]]),
        (fields.Tensor(shape=[2]), [1, 2], [1, 2, 3]),
        (fields.Table(features=["a", "b"]), {"a": 1, "b": 2}, {"a": 1}),
        (fields.Text(max_length=3), "abc", "abcd"),
        (fields.Number(), 1.5, "1.5"),
    ],
)
def test_json_schema_agrees_with_decode(field: fields.Field, good: object, bad: object) -> None:
    schema = field.json_schema()
    jsonschema.validate(good, schema)
    field.decode(good)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(InvalidInput):
        field.decode(bad)


# -- fuzzing: any JSON value is either decoded or refused with InvalidInput -----------------
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: Python's json parser accepts them
    | st.text(max_size=40)
    | st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=40,
)
FUZZED = [
    IMAGE,
    RGB,
    fields.Tensor(shape=[2, 3], name="tensor"),
    fields.Table(features=["a", "b"], name="row"),
    fields.Text(max_length=20, name="text"),
    fields.Number(name="number"),
]


@pytest.mark.parametrize("field", FUZZED, ids=lambda f: f.kind)
@given(value=JSON_VALUES | st.sampled_from([png(np.zeros((8, 8))), [[1.0] * 3] * 2]))
@settings(max_examples=300, deadline=None)
def test_any_json_value_is_decoded_or_refused_clearly(field: fields.Field, value: object) -> None:
    try:
        field.decode(value, index=0)
    except InvalidInput as exc:
        assert exc.field == field.name and exc.index == 0 and exc.expected, exc
        assert len(str(exc)) < 600  # the message never carries the input back


def test_numbers_beyond_float32_are_refused_not_overflowed() -> None:
    table = fields.Table(features=["a", "b"], name="row")
    assert "within ±3.4e38" in error(table, {"a": 1e39, "b": 0}).problem
    assert "within ±3.4e38" in error(table, [10**400, 0]).problem  # would raise OverflowError
    assert error(fields.Number(name="n"), 10**400).expected == "a finite number within ±3.4e38"
    assert fields.Number(name="n").decode(3.0e38) == 3.0e38


def test_out_of_range_pixels_are_named_exactly() -> None:
    image = fields.Image(height=2, width=2)
    with pytest.raises(InvalidInput, match=r"range from 0 to 255\.0001"):
        image.decode([[0, 255.0001], [1, 2]])
