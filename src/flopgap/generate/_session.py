"""A causal LM ready to prefill and decode with transformers' own KV cache classes.

The two phases are plain callables, so that counting and timing see exactly what
runs:

- ``prefill(ids)``: a fresh cache, one forward pass over the ``P`` prompt tokens that
  fills it, logits for every prompt position (as ``model.generate`` computes them).
- ``decode_step()``: one forward pass of one new token per sequence against a cache
  holding ``L`` tokens. Before the pass the cache is put back to exactly ``L`` tokens,
  so every call does the same work (a ``DynamicCache`` grows by concatenation and a
  ``StaticCache`` advances its write position; both are reset by reassigning the
  layer's tensors / refilling its position counter, a few attribute writes per layer).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from flopgap.errors import UsageError
from flopgap.models import Inputs

__all__ = ["LMSession", "CACHE_KINDS", "session_for"]

CACHE_KINDS = ("dynamic", "static")
_SEED = 0


@dataclass
class LMSession:
    """A causal LM, its config and the cache class to use."""

    spec: str
    module: nn.Module
    config: object
    cache: str = "dynamic"
    device: str = "cpu"

    def __post_init__(self):
        if self.cache not in CACHE_KINDS:
            raise UsageError(f"--cache must be one of {', '.join(CACHE_KINDS)}, got {self.cache!r}")
        params = inspect.signature(self.module.forward).parameters
        # transformers >= 5.x names it `cache`; earlier versions `past_key_values`
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        # as model.generate() does: logits for the last position only (a prefill of P
        # tokens would otherwise project all P hidden states onto the vocabulary)
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.vocab = int(getattr(self.config, "vocab_size", 2))

    # ------------------------------------------------------------------ pieces
    def prompt(self, batch: int, length: int, seed: int = _SEED) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, self.vocab, (batch, length), generator=g).to(self.device)

    def new_cache(self, max_len: int):
        import transformers

        if self.cache == "static":
            return transformers.StaticCache(config=self.config, max_cache_len=max_len)
        return transformers.DynamicCache(config=self.config)

    def inputs(self, ids: torch.Tensor, cache) -> Inputs:
        return Inputs((ids,), {self.cache_arg: cache, "use_cache": True, **self.extra})

    def filled(self, batch: int, length: int, max_len: int):
        """A cache holding ``length`` tokens of a real prefill, room for ``max_len``."""
        cache = self.new_cache(max_len)
        inputs = self.inputs(self.prompt(batch, length), cache)
        with torch.inference_mode():
            self.module(*inputs, **inputs.kwargs)
        return cache

    # ------------------------------------------------------------------ the two phases
    def prefill(self, batch: int, prompt: int):
        """``fresh()``: the prefill's inputs, the same prompt with a new empty cache each
        call (a cache that already held the prompt would turn prefill into a longer decode)."""
        ids = self.prompt(batch, prompt)

        def fresh() -> Inputs:
            return self.inputs(ids, self.new_cache(prompt + 1))

        return fresh

    def decode(self, batch: int, context: int):
        """``(inputs, reset)``: one new token per sequence against a cache of ``context``
        tokens; ``reset()`` puts the cache back to ``context`` tokens."""
        cache = self.filled(batch, context, context + 1)
        reset = CacheReset(cache)
        ids = self.prompt(batch, 1, seed=_SEED + 1)
        return self.inputs(ids, cache), reset

    def cache_tensors(self, cache) -> list[torch.Tensor]:
        """The key and value tensors a cache holds now."""
        out = []
        for layer in getattr(cache, "layers", []):
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    out.append(t)
        return out


class CacheReset:
    """Puts a cache back to the state it had when this was made: each layer's key and
    value tensors and its position counter (a tensor, refilled in place so that a
    static cache keeps its addresses, or an int, reassigned)."""

    _ATTRS = ("keys", "values", "cumulative_length")

    def __init__(self, cache):
        self.layers = []
        for layer in getattr(cache, "layers", []):
            saved = {}
            for name in self._ATTRS:
                if hasattr(layer, name):
                    value = getattr(layer, name)
                    saved[name] = int(value) if name == "cumulative_length" and isinstance(value, torch.Tensor) \
                        else value
            self.layers.append((layer, saved))
        if not self.layers:
            raise UsageError("this model's cache has no per-layer tensors flopgap knows how to reset "
                             "(transformers DynamicCache or StaticCache expected)")

    def __call__(self) -> None:
        for layer, saved in self.layers:
            for name, value in saved.items():
                if name == "cumulative_length" and isinstance(getattr(layer, name), torch.Tensor):
                    getattr(layer, name).fill_(value)
                else:
                    setattr(layer, name, value)


def session_for(spec_or_loaded, *, kwargs: dict | None = None, cache: str = "dynamic",
                device: str = "cpu") -> LMSession:
    """An :class:`LMSession` for ``hf:ARCH`` (or a loaded transformers causal LM)."""
    from flopgap.models import load_model
    from flopgap.models import is_causal_lm

    loaded = load_model(spec_or_loaded, kwargs or {}) if isinstance(spec_or_loaded, str) else spec_or_loaded
    module = loaded.module
    config = getattr(module, "config", None)
    if config is None or not is_causal_lm(module):
        raise UsageError(f"{loaded.spec} is not a transformers causal LM (hf:llama, hf:gpt2, hf:mistral, ...): "
                         "generation needs a model with a KV cache")
    config.use_cache = True
    module.eval().to(device)
    return LMSession(loaded.spec, module, config, cache, device)
