"""Strict JSON for every file flopgap writes: NaN and infinities become ``null``."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["jsonable", "dumps"]


def jsonable(value: Any) -> Any:
    """Plain JSON types only, recursively: non-finite floats -> ``None``, numpy/torch
    scalars -> Python numbers, objects with ``to_dict()`` -> their dict, the rest -> str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return jsonable(value.item())
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return jsonable(value.to_dict())
    return str(value)


def dumps(value: Any, indent: int | None = 1) -> str:
    """Strict JSON text (``allow_nan=False``); unknown objects are written with ``str``."""
    return json.dumps(jsonable(value), indent=indent, default=str, allow_nan=False)
