"""Model specs: turn a string the user typed into an ``nn.Module`` and its example inputs.

Accepted everywhere a model is named:

- ``torchvision:NAME``  any classification model torchvision builds (random weights);
  ``kwargs`` are passed to the builder.
- ``seed:NAME``          the seed article's example models (``flopgap models``).
- ``zoo:NAME``           built-in transformer blocks (encoder/decoder) built from code.
- ``timm:NAME``          any timm model (random weights), input size from its config.
- ``hf:ARCH``            a transformers model from its config class (``hf:llama``,
  ``hf:bert``...; ``kwargs`` override config fields), or ``hf:PATH/config.json``.
- ``package.module:callable``  a factory returning an ``nn.Module`` (the current
  directory is importable). The module may carry ``example_inputs`` (a tuple).
- a file: ``.pt2`` (``torch.export`` program) or ``.pt``/``.ts`` (TorchScript). Loading
  never unpickles arbitrary Python objects.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from flopgap.errors import UsageError, one_line
from flopgap.models._inputs import InputSpec, parse_input_spec, with_batch, with_seq

__all__ = ["LoadedModel", "load_model", "resolve_inputs", "parse_kwargs", "call_model", "builtin_models"]

_IMAGE_INPUT = (InputSpec((1, 3, 224, 224)),)


@dataclass
class LoadedModel:
    """A model ready to run: the module (in eval mode) and what it was built from."""

    spec: str
    module: nn.Module
    example_inputs: tuple[InputSpec, ...] | None = None
    source: str = "factory"
    kwargs: dict = field(default_factory=dict)


def parse_kwargs(text: str | None) -> dict:
    """Parse ``--kwargs`` JSON (an object) or raise a one-line :class:`UsageError`."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--kwargs is not valid JSON ({e.msg} at column {e.colno}): {text!r}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--kwargs must be a JSON object like '{{\"num_classes\": 10}}', got {text!r}")
    return value


def _torchvision(name: str, kwargs: dict, meta: bool) -> LoadedModel:
    try:
        import torchvision.models as tvm
    except ImportError:
        raise UsageError("torchvision is not installed: pip install 'flopgap[vision]'") from None
    known = tvm.list_models(module=tvm)
    if name not in known:
        close = [k for k in known if name.lower() in k][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else " (flopgap models --source torchvision lists them)"
        raise UsageError(f"unknown torchvision classification model {name!r}{hint}")
    kw = dict(kwargs)
    kw.setdefault("weights", None)
    if name in ("googlenet", "inception_v3"):
        kw.setdefault("init_weights", False)  # scipy-based init is slow and irrelevant for latency
    try:
        try:
            with torch.device("meta") if meta else contextlib.nullcontext():
                module = tvm.get_model(name, **kw)
        except NotImplementedError:
            if not meta:
                raise
            # some builders compute with tensors at build time (regnet's block widths);
            # build on the CPU, then move the parameters to meta
            module = tvm.get_model(name, **kw).to("meta")
    except TypeError as e:
        raise UsageError(f"torchvision:{name} rejected --kwargs: {e}") from None
    return LoadedModel(f"torchvision:{name}", module, _IMAGE_INPUT, "torchvision", kwargs)


def _seed(name: str, kwargs: dict, meta: bool) -> LoadedModel:
    from flopgap.models.seed import SEED_MODELS

    if kwargs:
        raise UsageError(f"seed:{name} takes no --kwargs (the article's models are fixed)")
    if name not in SEED_MODELS:
        raise UsageError(f"unknown seed model {name!r}; known: {', '.join(SEED_MODELS)}")
    entry = SEED_MODELS[name]
    with torch.device("meta") if meta and "int8" not in name else contextlib.nullcontext():
        module = entry.build()
    return LoadedModel(f"seed:{name}", module, entry.inputs, "seed")


def _zoo(name: str, kwargs: dict, meta: bool) -> LoadedModel:
    from flopgap.models.zoo import ZOO_MODELS

    if name not in ZOO_MODELS:
        raise UsageError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_MODELS)}")
    entry = ZOO_MODELS[name]
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            module = entry.build(**kwargs)
    except (TypeError, AssertionError, ValueError) as e:
        raise UsageError(f"zoo:{name} rejected --kwargs {kwargs}: {one_line(e)} "
                         f"(its settings: {', '.join(f'{k}={v}' for k, v in entry.defaults.items())})") from None
    return LoadedModel(f"zoo:{name}", module, entry.inputs, "zoo", kwargs)


def _file(path: Path) -> LoadedModel:
    if not path.is_file():
        raise UsageError(f"model file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        try:
            program = torch.export.load(str(path))
        except Exception as e:  # corrupt or foreign archive: report, never trace back
            raise UsageError(f"cannot load torch.export program {str(path)!r}: {one_line(e)}") from None
        try:
            module = torch.export.unflatten(program)  # restores the module hierarchy
        except Exception:
            module = program.module()
        inputs = None
        example = getattr(program, "example_inputs", None)
        if example is not None and not example[1]:
            tensors = example[0]
            if all(isinstance(t, torch.Tensor) for t in tensors):
                inputs = tuple(
                    InputSpec(tuple(t.shape), str(t.dtype).removeprefix("torch."))
                    if t.dtype.is_floating_point else
                    InputSpec(tuple(t.shape), str(t.dtype).removeprefix("torch."), 0, 2)
                    for t in tensors
                )
        return LoadedModel(str(path), module, inputs, "export")
    if suffix in (".pt", ".ts", ".pth"):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise UsageError(
                f"{str(path)!r} is not a TorchScript archive ({one_line(e)}); flopgap never unpickles "
                "arbitrary code: save with torch.jit.save(torch.jit.script(m)) or torch.export.save"
            ) from None
        return LoadedModel(str(path), module, None, "torchscript")
    raise UsageError(f"unknown model file type {suffix!r} for {str(path)!r}: use .pt2 (torch.export) or .pt/.ts (TorchScript)")


def _factory(spec: str, kwargs: dict, meta: bool) -> LoadedModel:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise UsageError(f"bad model spec {spec!r}: expected package.module:callable")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:  # the current directory is importable for the import only
        sys.path.insert(0, cwd)
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise UsageError(f"cannot import {mod_name!r} for model spec {spec!r}: {e}") from None
    except Exception as e:
        raise UsageError(f"importing {mod_name!r} failed: {one_line(e)}") from None
    finally:
        if added:
            sys.path.remove(cwd)
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        module = obj
    elif callable(obj):
        try:
            with torch.device("meta") if meta else contextlib.nullcontext():
                module = obj(**kwargs)
        except Exception as e:
            raise UsageError(f"{spec} raised while building the model: {one_line(e)}") from None
    else:
        raise UsageError(f"{spec} is neither an nn.Module nor a callable")
    inputs = None
    if isinstance(module, tuple) and len(module) == 2 and isinstance(module[0], nn.Module):
        module, example = module
        inputs = _specs_from_example(example)
    if not isinstance(module, nn.Module):
        raise UsageError(f"{spec} returned {type(module).__name__}, not an nn.Module")
    if inputs is None and getattr(module, "example_inputs", None) is not None:
        inputs = _specs_from_example(module.example_inputs)
    return LoadedModel(spec, module, inputs, "factory", kwargs)


def _specs_from_example(example) -> tuple[InputSpec, ...] | None:
    if isinstance(example, torch.Tensor):
        example = (example,)
    out = []
    for t in example:
        if isinstance(t, InputSpec):
            out.append(t)
        elif isinstance(t, str):
            out.append(parse_input_spec(t))
        elif isinstance(t, torch.Tensor):
            dt = str(t.dtype).removeprefix("torch.")
            out.append(InputSpec(tuple(t.shape), dt) if t.dtype.is_floating_point else InputSpec(tuple(t.shape), dt, 0, 2))
        else:
            return None
    return tuple(out)


def load_model(spec: str, kwargs: dict | None = None, *, meta: bool = False) -> LoadedModel:
    """Build the model named by ``spec`` in eval mode.

    ``meta=True`` builds parameters on the meta device (no memory, no kernels) where
    the source allows, for counting models too large to run.
    """
    kwargs = kwargs or {}
    if not spec or not spec.strip():
        raise UsageError("empty model spec")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix == "torchvision":
        loaded = _torchvision(rest, kwargs, meta)
    elif sep and prefix == "seed":
        loaded = _seed(rest, kwargs, meta)
    elif sep and prefix == "zoo":
        loaded = _zoo(rest, kwargs, meta)
    elif sep and prefix == "timm":
        from flopgap.models._timm import load_timm

        module, inputs = load_timm(rest, kwargs, meta)
        loaded = LoadedModel(f"timm:{rest}", module, inputs, "timm", kwargs)
    elif sep and prefix == "hf":
        from flopgap.models._hf import load_hf

        module, inputs, _ = load_hf(rest, kwargs, meta)
        loaded = LoadedModel(f"hf:{rest}", module, inputs, "hf", kwargs)
    elif Path(spec).suffix.lower() in (".pt2", ".pt", ".ts", ".pth") or Path(spec).is_file():
        loaded = _file(Path(spec))
    elif sep and all(p.isidentifier() for p in prefix.split(".")):
        loaded = _factory(spec, kwargs, meta)
    else:
        raise UsageError(
            f"unknown model spec {spec!r}: use torchvision:NAME, timm:NAME, hf:ARCH, seed:NAME, zoo:NAME, "
            "package.module:callable or a .pt2/.pt file (flopgap models lists built-ins)"
        )
    loaded.module.eval()
    return loaded


def resolve_inputs(loaded: LoadedModel, input_specs: list[str] | None = None,
                   batch: int | None = None, seq: int | None = None) -> tuple[InputSpec, ...]:
    """The input specs to use: explicit ``--input`` values, else the model's declared
    ones; ``batch`` overrides the leading dimension, ``seq`` the token dimension."""
    if input_specs:
        specs = tuple(parse_input_spec(s) for s in input_specs)
    elif loaded.example_inputs:
        specs = loaded.example_inputs
    else:
        raise UsageError(f"{loaded.spec} declares no example input: pass --input, e.g. --input 1x3x224x224")
    return with_seq(with_batch(specs, batch), seq)


def call_model(module: nn.Module, inputs: tuple, spec: str = "model"):
    """Run one forward pass, keyword inputs included (:class:`Inputs`); a model that
    raises becomes a one-line :class:`UsageError`."""
    kwargs = getattr(inputs, "kwargs", None)
    try:
        return module(*inputs, **kwargs) if kwargs else module(*inputs)
    except (KeyboardInterrupt, UsageError):
        raise
    except Exception as e:
        from flopgap.models._inputs import describe_inputs

        raise UsageError(
            f"{spec} raised on inputs {', '.join(describe_inputs(inputs))}: {one_line(e)}; "
            "check --input/--batch"
        ) from None


def builtin_models() -> dict[str, str]:
    """Built-in model specs with a one-line description each."""
    from flopgap.models.seed import SEED_MODELS

    out = {f"seed:{k}": v.description for k, v in SEED_MODELS.items()}
    try:
        from flopgap.models.zoo import ZOO_MODELS

        out.update({f"zoo:{k}": v.description for k, v in ZOO_MODELS.items()})
    except ImportError:
        pass
    return out


