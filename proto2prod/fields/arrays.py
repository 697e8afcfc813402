"""JSON numbers and nested lists as the network can take them: finite, in range, not ragged."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from proto2prod.fields.field import Field, type_name

if TYPE_CHECKING:
    import numpy as np

FLOAT32_MAX = 3.4028234663852886e38
DTYPES = ("float32", "int64")
"""What a tensor input decodes to: floats for features and pixels, integers for token ids."""


def finite_float32(value: Any) -> bool:
    """A JSON number the network can take: finite, and within float32's range (a huge
    int would otherwise raise OverflowError, a huge float turn into inf)."""
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and abs(number) <= FLOAT32_MAX


def numeric_array(
    field: Field, value: Any, expected: str, index: int | None, dtype: str = "float32"
) -> np.ndarray:
    """A nested JSON list (or, from Python callers, a numpy array) as a float32 (or int64)
    array, refusing strings, booleans, ragged lists, NaN, and for int64 non-integers."""
    import numpy as np

    if not isinstance(value, list | np.ndarray):
        raise field._invalid(f"got {type_name(value)}", expected, index)
    try:
        raw = np.asarray(value)
    except ValueError:
        raise field._invalid("the nested lists have uneven lengths", expected, index) from None
    if raw.dtype.kind not in "iuf" or raw.size == 0:
        problem = "it is empty" if raw.size == 0 else "it holds values that are not numbers"
        raise field._invalid(problem, expected, index)
    if dtype == "int64":
        if raw.dtype.kind == "f":
            raise field._invalid("it holds numbers that are not integers", expected, index)
        if raw.dtype.kind == "u" and raw.max() > np.iinfo(np.int64).max:
            raise field._invalid("it holds integers beyond int64's range", expected, index)
        return raw.astype(np.int64)
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, refused below
        array = raw.astype(np.float32)
    if not np.isfinite(array).all():
        raise field._invalid(
            "it holds NaN, infinite or out-of-range (beyond ±3.4e38) values", expected, index
        )
    return array
