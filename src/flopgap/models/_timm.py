"""``timm:NAME``: any model timm builds, with random weights (``pretrained=False``) and
its default input size from the model's ``pretrained_cfg`` (e.g. 3x224x224, 3x256x256
for some MobileViTs, 3x300x300 for EfficientNet-B3)."""

from __future__ import annotations

import contextlib

import torch

from flopgap.errors import UsageError, one_line
from flopgap.models._inputs import InputSpec

__all__ = ["load_timm", "import_timm", "timm_models"]


def import_timm():
    try:
        import timm
    except ImportError:
        raise UsageError("timm: models need timm: pip install 'flopgap[timm]'") from None
    return timm


def timm_models() -> list[str]:
    return import_timm().list_models()


def load_timm(name: str, kwargs: dict, meta: bool):
    """Build ``timm:name``; returns ``(module, input specs)``."""
    timm = import_timm()
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else " (flopgap models --source timm lists them)"
        raise UsageError(f"unknown timm model {name!r}{hint}")
    kw = {k: v for k, v in kwargs.items() if k != "pretrained"}
    try:
        try:
            with torch.device("meta") if meta else contextlib.nullcontext():
                module = timm.create_model(name, pretrained=False, **kw)
        except NotImplementedError:
            if not meta:
                raise
            # builders that compute with tensors at build time: build on the CPU, then move to meta
            module = timm.create_model(name, pretrained=False, **kw).to("meta")
    except (TypeError, ValueError, AssertionError) as e:
        raise UsageError(f"timm:{name} rejected --kwargs {kwargs}: {one_line(e)}") from None
    cfg = getattr(module, "pretrained_cfg", None) or {}
    size = tuple(int(v) for v in cfg.get("input_size", (3, 224, 224)))
    return module, (InputSpec((1, *size)),)
