"""Model specs: turn a string the user typed into an ``nn.Module`` and its example inputs.

Accepted everywhere a model is named:

- ``torchvision:NAME``  any classification model torchvision builds (random weights);
  ``kwargs`` are passed to the builder.
- ``seed:NAME``          the seed article's example models (``flopgap models``).
- ``zoo:NAME``           built-in transformer blocks (encoder/decoder) built from code.
- ``package.module:callable``  a factory returning an ``nn.Module`` (the current
  directory is importable). The module may carry ``example_inputs`` (a tuple).
- a file: ``.pt2`` (``torch.export`` program) or ``.pt``/``.ts`` (TorchScript). Loading
  never unpickles arbitrary Python objects (:mod:`flopgap.models._archive`).

Nothing is downloaded: torchvision's weight arguments (``weights``, ``pretrained`` and
their ``_backbone`` forms) are refused unless they say "none", and while any model is
built or loaded ``torch.hub``'s downloader refuses every URL (:func:`no_downloads`).
Whatever goes wrong while building a model (a builder that rejects its ``--kwargs``, a
factory that raises or exits, example inputs that are not inputs) is a one-line
:class:`~flopgap.errors.UsageError`; only Ctrl-C passes through.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from flopgap.errors import UsageError, one_line
from flopgap.models._inputs import InputSpec, _available_memory, _DTYPES, check_spec, parse_input_spec, with_batch

__all__ = ["LoadedModel", "load_model", "resolve_inputs", "parse_kwargs", "call_model", "builtin_models",
           "no_downloads", "raised_by_model"]

_IMAGE_INPUT = (InputSpec((1, 3, 224, 224)),)
_MAX_KWARGS_DEPTH = 32  # --kwargs nested deeper than this is not a builder's configuration
_MAX_KWARGS_CHARS = 1_000_000
# torchvision arguments that load pretrained weights (downloading them on first use)
_WEIGHT_ARGS = ("weights", "pretrained", "weights_backbone", "pretrained_backbone")
_MAX_MEMORY_SHARE = 0.5  # parameters beyond half the available memory: refused before they are allocated


@dataclass
class LoadedModel:
    """A model ready to run: the module (in eval mode) and what it was built from."""

    spec: str
    module: nn.Module
    example_inputs: tuple[InputSpec, ...] | None = None
    source: str = "factory"
    kwargs: dict = field(default_factory=dict)


def _depth(value) -> int:
    """How deeply JSON containers nest in ``value`` (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d <= _MAX_KWARGS_DEPTH:
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def parse_kwargs(text: str | None) -> dict:
    """Parse ``--kwargs`` JSON (an object) or raise a one-line :class:`UsageError`."""
    if not text:
        return {}
    short = text if len(text) <= 80 else text[:77] + "..."
    if len(text) > _MAX_KWARGS_CHARS:
        raise UsageError(f"--kwargs is longer than {_MAX_KWARGS_CHARS:,} characters: {short!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--kwargs is not valid JSON ({e.msg} at column {e.colno}): {short!r}") from None
    except RecursionError:
        raise UsageError(f"--kwargs nests deeper than {_MAX_KWARGS_DEPTH} levels: {short!r}") from None
    except ValueError:  # an integer with more digits than Python converts (4300)
        raise UsageError(f"--kwargs has an integer with more digits than Python reads: {short!r}") from None
    if not isinstance(value, dict):
        raise UsageError(f"--kwargs must be a JSON object like '{{\"num_classes\": 10}}', got {short!r}")
    if _depth(value) > _MAX_KWARGS_DEPTH:
        raise UsageError(f"--kwargs nests deeper than {_MAX_KWARGS_DEPTH} levels: {short!r}")
    return value


class _DownloadRefused(UsageError):
    pass


@contextlib.contextmanager
def no_downloads(spec: str):
    """While the block runs, ``torch.hub`` refuses to download (pretrained weights, hub
    repositories): flopgap promises to download nothing. Files already in torch's hub
    cache are not downloads and still load."""
    import torch.hub

    original = torch.hub.download_url_to_file

    def refuse(url, *args, **kwargs):
        raise _DownloadRefused(f"{spec} tried to download {url}: flopgap downloads nothing (build the model with "
                               "random weights, or load weights from a local file in your own factory)")

    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = original


def _refuse_weights(name: str, kwargs: dict) -> None:
    for key in _WEIGHT_ARGS:
        value = kwargs.get(key)
        if value is not None and value is not False and not (isinstance(value, str) and value.lower() == "none"):
            raise UsageError(f"torchvision:{name}: --kwargs {key}={value!r} would download pretrained weights; "
                             "flopgap downloads nothing and builds models with random weights (latency and "
                             f"counts do not depend on the weight values): leave {key} out")


def _built(spec: str, build, meta: bool, kwargs: dict | None = None) -> nn.Module:
    """``build()`` (on the meta device when ``meta``), any failure but Ctrl-C a one-line
    :class:`UsageError` naming ``spec``; for a real build the parameters are first sized
    on the meta device and refused when they would not fit in memory."""
    try:
        with no_downloads(spec):
            if not meta:
                _check_size(spec, build)
            with torch.device("meta") if meta else contextlib.nullcontext():
                module = build()
    except (KeyboardInterrupt, UsageError):
        raise
    except BaseException as e:  # a builder that rejects its arguments, in whatever way it does
        what = f"rejected --kwargs {json.dumps(kwargs)[:200]}" if kwargs else "could not be built"
        raise UsageError(f"{spec} {what}: {one_line(e)[:300]}") from None
    if not isinstance(module, nn.Module):
        raise UsageError(f"{spec} built {type(module).__name__}, not an nn.Module")
    return module


def _check_size(spec: str, build) -> None:
    """Refuse a model whose parameters would take more than half the memory available
    (``num_classes=10**9``): measured on the meta device, where building costs nothing.
    Builders that compute with tensors while building cannot run on meta: not checked."""
    have = _available_memory()
    if have is None:
        return
    try:
        with torch.device("meta"):
            probe = build()
    except (KeyboardInterrupt, UsageError):
        raise
    except BaseException:  # noqa: BLE001 - the real build below reports the error
        return
    if not isinstance(probe, nn.Module):
        return
    need = sum(t.numel() * t.element_size() for t in [*probe.parameters(), *probe.buffers()])
    if need > _MAX_MEMORY_SHARE * have:
        raise UsageError(f"{spec} has {need / 1e9:.3g} GB of parameters, more than half of the {have / 1e9:.3g} GB "
                         "this machine has available: count it with --meta")


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
    _refuse_weights(name, kwargs)
    kw = {k: v for k, v in kwargs.items() if k not in _WEIGHT_ARGS}
    kw["weights"] = None
    if name in ("googlenet", "inception_v3"):
        kw.setdefault("init_weights", False)  # scipy-based init is slow and irrelevant for latency
    spec = f"torchvision:{name}"
    try:
        module = _built(spec, lambda: tvm.get_model(name, **kw), meta, kwargs)
    except UsageError:
        if not meta:
            raise
        # some builders compute with tensors at build time (regnet's block widths):
        # build on the CPU, then move the parameters to meta
        module = _built(spec, lambda: tvm.get_model(name, **kw), False, kwargs).to("meta")
    return LoadedModel(spec, module, _IMAGE_INPUT, "torchvision", kwargs)


def _seed(name: str, kwargs: dict, meta: bool) -> LoadedModel:
    from flopgap.models.seed import SEED_MODELS

    if kwargs:
        raise UsageError(f"seed:{name} takes no --kwargs (the article's models are fixed)")
    if name not in SEED_MODELS:
        raise UsageError(f"unknown seed model {name!r}; known: {', '.join(SEED_MODELS)}")
    entry = SEED_MODELS[name]
    module = _built(f"seed:{name}", entry.build, meta and "int8" not in name)
    return LoadedModel(f"seed:{name}", module, entry.inputs, "seed")


def _zoo(name: str, kwargs: dict, meta: bool) -> LoadedModel:
    from flopgap.models.zoo import ZOO_MODELS

    if name not in ZOO_MODELS:
        raise UsageError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_MODELS)}")
    entry = ZOO_MODELS[name]
    try:
        module = _built(f"zoo:{name}", lambda: entry.build(**kwargs), meta, kwargs)
    except UsageError as e:
        raise UsageError(f"{e} (its settings: {', '.join(f'{k}={v}' for k, v in entry.defaults.items())})") from None
    return LoadedModel(f"zoo:{name}", module, entry.inputs, "zoo", kwargs)


def _file(path: Path) -> LoadedModel:
    if not _is_file(path):
        raise UsageError(f"model file {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        from flopgap.models._archive import load_exported

        program = load_exported(path, _available_memory())
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    module = torch.export.unflatten(program)  # restores the module hierarchy
                except Exception:
                    module = program.module()
        except Exception as e:
            raise UsageError(f"cannot rebuild a module from {str(path)!r}: {one_line(e)}") from None
        inputs = None
        example = getattr(program, "example_inputs", None)
        if isinstance(example, tuple) and len(example) == 2 and not example[1] and isinstance(example[0], tuple):
            try:
                inputs = _specs_from_example(example[0], str(path))
            except UsageError:
                inputs = None  # the sample inputs are a convenience: --input still works
        return LoadedModel(str(path), module, inputs, "export")
    if suffix in (".pt", ".ts", ".pth"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
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
        with no_downloads(spec):
            mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise UsageError(f"cannot import {mod_name!r} for model spec {spec!r}: {e}") from None
    except (KeyboardInterrupt, UsageError):
        raise
    except BaseException as e:  # an import that raises or exits: the user's code, one line
        raise UsageError(f"importing {mod_name!r} failed: {one_line(e)}") from None
    finally:
        if added:
            sys.path.remove(cwd)
    obj = mod
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {mod_name!r} has no attribute {attr!r}") from None
        except (KeyboardInterrupt, UsageError):
            raise
        except BaseException as e:
            raise UsageError(f"reading {attr!r} from {mod_name!r} failed: {one_line(e)}") from None
    if isinstance(obj, nn.Module):
        module = obj
    elif callable(obj):
        module = _call_factory(spec, obj, kwargs, meta)
    else:
        raise UsageError(f"{spec} is neither an nn.Module nor a callable")
    inputs = None
    if isinstance(module, tuple) and len(module) == 2 and isinstance(module[0], nn.Module):
        module, example = module
        inputs = _specs_from_example(example, spec)
    if not isinstance(module, nn.Module):
        raise UsageError(f"{spec} returned {type(module).__name__}, not an nn.Module")
    if inputs is None:
        try:
            example = getattr(module, "example_inputs", None)
        except (KeyboardInterrupt, UsageError):
            raise
        except BaseException as e:
            raise UsageError(f"{spec}: reading example_inputs failed: {one_line(e)}") from None
        if example is not None:
            inputs = _specs_from_example(example, spec)
    return LoadedModel(spec, module, inputs, "factory", kwargs)


def _call_factory(spec: str, factory, kwargs: dict, meta: bool):
    """The factory's return value (checked by the caller); a factory that raises or exits
    is a one-line :class:`UsageError`."""
    try:
        with no_downloads(spec), torch.device("meta") if meta else contextlib.nullcontext():
            return factory(**kwargs)
    except (KeyboardInterrupt, UsageError):
        raise
    except BaseException as e:
        raise UsageError(f"{spec} raised while building the model: {one_line(e)[:300]}") from None


def _specs_from_example(example, source: str) -> tuple[InputSpec, ...]:
    """Input specs from a model's declared example inputs: a tensor, or a tuple/list of
    tensors, :class:`InputSpec` and spec strings; anything else is a one-line error."""
    if isinstance(example, (torch.Tensor, InputSpec, str)):
        example = (example,)
    if not isinstance(example, (tuple, list)) or not example:
        raise UsageError(f"{source}: example_inputs must be a non-empty tuple of tensors, InputSpec or input "
                         f"spec strings, got {type(example).__name__}")
    out = []
    for i, t in enumerate(example):
        if isinstance(t, InputSpec):
            out.append(check_spec(t, f"{source} example input {i}"))
        elif isinstance(t, str):
            out.append(parse_input_spec(t))
        elif isinstance(t, torch.Tensor):
            dt = str(t.dtype).removeprefix("torch.")
            if dt not in _DTYPES:
                raise UsageError(f"{source}: example input {i} has dtype {dt}, which flopgap cannot generate")
            bounds = () if t.dtype.is_floating_point or t.dtype == torch.bool else (0, 2)
            out.append(check_spec(InputSpec(tuple(int(d) for d in t.shape), dt, *bounds),
                                  f"{source} example input {i}"))
        else:
            raise UsageError(f"{source}: example input {i} is a {type(t).__name__}, not a tensor, InputSpec "
                             "or input spec string")
    return tuple(out)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for names the OS cannot even look up (too long, a NUL)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def load_model(spec: str, kwargs: dict | None = None, *, meta: bool = False) -> LoadedModel:
    """Build the model named by ``spec`` in eval mode.

    ``meta=True`` builds parameters on the meta device (no memory, no kernels) where
    the source allows, for counting models too large to run.
    """
    kwargs = kwargs or {}
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("empty model spec")
    if "\x00" in spec:
        raise UsageError(f"bad model spec {spec[:80]!r}: it contains a NUL character")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix == "torchvision":
        loaded = _torchvision(rest, kwargs, meta)
    elif sep and prefix == "seed":
        loaded = _seed(rest, kwargs, meta)
    elif sep and prefix == "zoo":
        loaded = _zoo(rest, kwargs, meta)
    elif Path(spec).suffix.lower() in (".pt2", ".pt", ".ts", ".pth") or _is_file(Path(spec)):
        loaded = _file(Path(spec))
    elif sep and all(p.isidentifier() for p in prefix.split(".")):
        loaded = _factory(spec, kwargs, meta)
    else:
        raise UsageError(
            f"unknown model spec {spec[:200]!r}: use torchvision:NAME, seed:NAME, zoo:NAME, "
            "package.module:callable or a .pt2/.pt file (flopgap models lists built-ins)"
        )
    try:
        loaded.module.eval()
    except (KeyboardInterrupt, UsageError):
        raise
    except BaseException as e:  # a module whose train()/eval() is overridden and raises
        raise UsageError(f"{spec}: putting the model in eval mode failed: {one_line(e)}") from None
    return loaded


def resolve_inputs(loaded: LoadedModel, input_specs: list[str] | None = None,
                   batch: int | None = None) -> tuple[InputSpec, ...]:
    """The input specs to use: explicit ``--input`` values, else the model's declared ones."""
    if input_specs:
        specs = tuple(parse_input_spec(s) for s in input_specs)
    elif loaded.example_inputs:
        specs = loaded.example_inputs
    else:
        raise UsageError(f"{loaded.spec} declares no example input: pass --input, e.g. --input 1x3x224x224")
    return with_batch(specs, batch)


def call_model(module: nn.Module, inputs: tuple, spec: str = "model"):
    """Run one forward pass; a model that raises (anything but Ctrl-C) becomes a one-line
    :class:`UsageError`."""
    from flopgap.models._inputs import describe_inputs

    with raised_by_model(spec, f"raised on inputs {', '.join(describe_inputs(inputs))}", "; check --input/--batch"):
        return module(*inputs)


@contextlib.contextmanager
def raised_by_model(spec: str, what: str = "raised while running", hint: str = ""):
    """Around code that runs the model (profiling, timing): whatever the model raises
    (anything but Ctrl-C and flopgap's own one-line errors) becomes one line,
    ``{spec} {what}: Type: message{hint}``."""
    try:
        yield
    except (KeyboardInterrupt, UsageError):
        raise
    except BaseException as e:
        raise UsageError(f"{spec} {what}: {one_line(e)[:300]}{hint}") from None


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


