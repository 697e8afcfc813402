"""MLflow "models from code" entry for a model with named inputs (`inputs = {...}`).

Like pyfunc_entry.py, but MLflow's signature names the columns (one per input key), so
`mlflow.pyfunc.load_model(uri).predict([{"image": ..., "shape": ...}, ...])` and
`mlflow models serve` (`{"dataframe_records": [...]}` or `{"inputs": [...]}`) take a list of
such objects; `predict` has no type hints, since MLflow would put a signature inferred from
them in place of the named one. MLflow hands a DataFrame over; its rows go back to plain
JSON (numpy numbers included) before the fields decode them, and the answer is a list of
objects keyed by the output names.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class NamedProtoModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from proto2prod.definition import load_definition
        from proto2prod.predictor import Predictor

        definition = load_definition(context.artifacts["definition"], check=False)
        self.predictor = Predictor(definition.model, context.artifacts["weights"])

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        return self.predictor.predict_batch(_records(model_input))

    def predict_stream(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        """A generative model's text for one item, chunk by chunk (`PyFuncModel.predict_stream`)."""
        records = _records(model_input)
        if len(records) != 1:
            raise ValueError(f"predict_stream takes one item, got {len(records)}")
        for chunk, _ in self.predictor.stream(records[0]):
            if chunk:
                yield chunk


def _records(model_input):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN202
    """Plain JSON objects from what MLflow hands over (a DataFrame, a list, one dict);
    missing optional columns (NaN in a DataFrame) are left out, so their defaults apply."""
    if hasattr(model_input, "to_json"):  # a DataFrame, one column per input key
        model_input = json.loads(model_input.to_json(orient="records"))
    if isinstance(model_input, dict):
        model_input = [model_input]
    return [{k: v for k, v in row.items() if v is not None} for row in model_input]


mlflow.models.set_model(NamedProtoModel())
