"""Reference statistics of a version's inputs and outputs, and how far live traffic drifts.

Recorded with every version (`reference_stats.json`, at `train` from the held-out inputs
the training returns, else from `examples()`), and kept by the service over a sliding
window of live requests (service/drift.py); compared per statistic with the Population
Stability Index (PSI) and, for numbers, a two-sample Kolmogorov-Smirnov p-value.

What is measured is each field kind's to say (`Field.input_statistics`,
`Field.output_statistics`, in proto2prod/fields/): for instance an Image input's mean
intensity (of the tensor the model sees, after the definition's preprocessing, so the
service measures exactly what was recorded), a Text input's length, a Label output's class
and top score, a Tensor output's norm, a Boxes output's count and mean score. Named inputs
and outputs prefix each part's statistics with its key (`input.hint.value`).

Numbers are binned by the reference's deciles, so each bin holds a tenth of the reference.
Verdicts follow the usual PSI reading: < 0.1 stable, < 0.25 watch, else retrain.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from proto2prod import fields

STABLE, WATCH = 0.1, 0.25
"""PSI below STABLE: stable; below WATCH: watch; from WATCH on: retrain."""
BINS = 10
SAMPLE = 1000
"""Reference values kept per numeric statistic, for the KS test."""
EPSILON = 1e-4
"""A bin's share is at least this in PSI (an empty bin would make it infinite)."""


def verdict(psi: float) -> str:
    return "stable" if psi < STABLE else "watch" if psi < WATCH else "retrain"


def input_values(field: fields.Field, item: Any, tensor: Any) -> dict[str, float]:
    """The input statistics of one item: its JSON value and the tensor the model sees."""
    return field.input_statistics(item, tensor, "input")


def output_values(field: fields.Field, output: Any) -> dict[str, float | str]:
    return field.output_statistics(output, "output")


def reference(columns: Mapping[str, Sequence[float | str]], *, source: str) -> dict[str, Any]:
    """The recorded form of each statistic's reference values."""
    statistics: dict[str, Any] = {}
    for name, values in columns.items():
        if not values:
            continue
        if isinstance(values[0], str):
            counts: dict[str, int] = {}
            for v in values:
                counts[str(v)] = counts.get(str(v), 0) + 1
            shares = {k: c / len(values) for k, c in counts.items()}
            statistics[name] = {"kind": "categorical", "shares": shares}
        else:
            numbers = sorted(float(v) for v in values)
            edges = sorted({_quantile(numbers, q / BINS) for q in range(1, BINS)})
            step = max(1, len(numbers) // SAMPLE)
            statistics[name] = {
                "kind": "numeric",
                "edges": edges,
                "shares": _shares(numbers, edges),
                "sample": numbers[::step],
            }
    return {"format": 1, "source": source, "count": _count(columns), "statistics": statistics}


def compare(recorded: Mapping[str, Any], live: Sequence[float | str]) -> dict[str, Any]:
    """PSI (and a KS p-value for numbers) of live values against one recorded statistic."""
    if recorded["kind"] == "categorical":
        expected: dict[str, float] = recorded["shares"]
        counts: dict[str, int] = {}
        for v in live:
            counts[str(v)] = counts.get(str(v), 0) + 1
        keys = sorted(set(expected) | set(counts))
        psi = _psi(
            [expected.get(k, 0.0) for k in keys], [counts.get(k, 0) / len(live) for k in keys]
        )
        return {"psi": psi, "ks_p": None, "verdict": verdict(psi), "live": len(live)}
    numbers = [float(v) for v in live]
    psi = _psi(recorded["shares"], _shares(sorted(numbers), recorded["edges"]))
    from scipy.stats import ks_2samp

    ks_p = float(ks_2samp(recorded["sample"], numbers, method="asymp").pvalue)
    return {"psi": psi, "ks_p": ks_p, "verdict": verdict(psi), "live": len(live)}


def _psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, EPSILON), max(a, EPSILON)
        total += (a - e) * math.log(a / e)
    return total


def _shares(ordered: Sequence[float], edges: Sequence[float]) -> list[float]:
    """The share of values in each bin: (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    import bisect

    counts = [0] * (len(edges) + 1)
    for v in ordered:
        counts[bisect.bisect_right(edges, v)] += 1
    return [c / len(ordered) for c in counts] if ordered else [0.0] * len(counts)


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _count(columns: Mapping[str, Sequence[Any]]) -> int:
    return max((len(v) for v in columns.values()), default=0)


REFERENCE_ITEMS = 2000
"""At most this many reference inputs are run through the model at publish."""


def of_version(model: Any, weights: Any, items: Sequence[Any], *, source: str) -> dict[str, Any]:
    """A version's reference: `items` (held-out or example inputs) through its weights."""
    from proto2prod.predictor import Predictor

    predictor = Predictor(model, weights, "cpu")
    chosen = list(items)[:REFERENCE_ITEMS]
    rows: list[dict[str, float | str]] = []
    for start in range(0, len(chosen), 64):
        part = chosen[start : start + 64]
        tensors = [predictor.prepare(item, i) for i, item in enumerate(part)]
        outputs = predictor.run(tensors)
        rows += [
            {**input_values(model.inputs, item, tensor), **output_values(model.outputs, output)}
            for item, tensor, output in zip(part, tensors, outputs, strict=True)
        ]
    return reference(columns_of(rows), source=source)


def columns_of(rows: Iterable[Mapping[str, float | str]]) -> dict[str, list[float | str]]:
    """Per-item statistics, as one list per statistic."""
    out: dict[str, list[float | str]] = {}
    for row in rows:
        for name, value in row.items():
            out.setdefault(name, []).append(value)
    return out
