"""The ceiling: raw in-process batched forward passes, no HTTP.

    python -m proto2prod.benchmarks.limit REF PAYLOAD.json SECONDS BATCH [BATCH ...]

prints `{"<batch>": samples_per_s, ...}`. Items are prepared (decoded, preprocessed) once:
what is timed is the forward pass and postprocessing, which no server can avoid.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def measure(ref: str, payload: Path, seconds: float, batches: list[int]) -> dict[str, float]:
    from proto2prod.benchmarks.apps.model_app import load
    from proto2prod.errors import InvalidInput

    predictor = load(ref)
    items = json.loads(payload.read_text())
    prepared = predictor.prepare_each(items)
    for problem in prepared:
        if isinstance(problem, InvalidInput):
            raise problem  # a payload the model refuses measures nothing
    results = {}
    for batch in batches:
        tensors = [prepared[i % len(prepared)] for i in range(batch)]
        for _ in range(3):
            predictor.run(tensors)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            predictor.run(tensors)
            done += batch
        results[str(batch)] = done / (time.perf_counter() - start)
    return results


def main() -> None:
    ref, payload, seconds = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(measure(ref, payload, seconds, [int(b) for b in sys.argv[4:]])))


if __name__ == "__main__":
    main()
