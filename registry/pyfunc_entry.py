"""MLflow "models from code" entry: a proto2prod version as an MLflow pyfunc.

MLflow copies this file into every logged version and runs it on `mlflow.pyfunc.load_model`
(and in `mlflow models serve`). It loads the definition's source and the safetensors weights
that were logged beside it and predicts through the same `Predictor` as everything else.
This runs the logged definition: it is for users who trust their registry. The proto2prod
service never runs it; it runs the definition installed with it (docs/architecture.md,
"Trust boundary").
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class ProtoModel(PythonModel):
    """`predict(items)` takes a list of JSON-encoded inputs and returns the list of outputs."""

    def load_context(self, context: Any) -> None:
        from proto2prod.definition import load_definition
        from proto2prod.predictor import Predictor

        definition = load_definition(context.artifacts["definition"], check=False)
        self.predictor = Predictor(definition.model, context.artifacts["weights"])

    def predict(self, context: Any, model_input: list[Any], params: Any = None) -> list[Any]:
        return self.predictor.predict_batch(model_input)

    def predict_stream(self, context: Any, model_input: Any, params: Any = None) -> Any:
        """A generative model's text for one item, chunk by chunk."""
        item = model_input[0] if isinstance(model_input, list) else model_input
        for chunk, _ in self.predictor.stream(item):
            if chunk:
                yield chunk


mlflow.models.set_model(ProtoModel())
