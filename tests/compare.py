"""Compare model outputs across paths (batch sizes change float rounding in the last digit)."""

from __future__ import annotations

from typing import Any

import pytest


def assert_same_outputs(got: list[Any], want: list[Any], tol: float = 1e-4) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        if isinstance(b, dict) and "label" in b:
            assert a["label"] == b["label"]
            # top-k sets may differ only where probabilities tie near zero
            for cls in set(a["scores"]) & set(b["scores"]):
                assert a["scores"][cls] == pytest.approx(b["scores"][cls], abs=tol)
        else:
            assert a == pytest.approx(b, abs=tol)
