"""Transformer blocks built from code (no downloads): BERT-like encoders and GPT-like
decoders at several widths and depths, with random weights.

Encoders use ``nn.TransformerEncoder`` (whose eval/no-grad fast path dispatches the
fused ``aten._transformer_encoder_layer_fwd``); decoders are written with
``F.scaled_dot_product_attention(is_causal=True)`` so the functional attention path is
exercised too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from flopgap.models._inputs import InputSpec

__all__ = ["ZooModel", "ZOO_MODELS", "Encoder", "Decoder"]

_VOCAB = 30522


class Encoder(nn.Module):
    """Token embedding + positional embedding + ``nn.TransformerEncoder`` + pooler."""

    def __init__(self, d_model: int = 256, layers: int = 4, heads: int = 4,
                 vocab: int = _VOCAB, max_len: int = 512, ffn_mult: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, ffn_mult * d_model, dropout=0.0,
                                           activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pooler = nn.Linear(d_model, d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.pos(positions)
        x = self.encoder(x)
        return torch.tanh(self.pooler(x[:, 0]))


class _DecoderBlock(nn.Module):
    def __init__(self, d_model: int, heads: int, ffn_mult: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn_mult * d_model)
        self.fc2 = nn.Linear(ffn_mult * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Decoder(nn.Module):
    """GPT-like decoder: embeddings, causal SDPA blocks, final norm and LM head."""

    def __init__(self, d_model: int = 256, layers: int = 4, heads: int = 4,
                 vocab: int = 8192, max_len: int = 512, ffn_mult: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(_DecoderBlock(d_model, heads, ffn_mult) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.pos(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


@dataclass(frozen=True)
class ZooModel:
    build: Callable[..., nn.Module]
    inputs: tuple[InputSpec, ...]
    description: str
    defaults: dict = field(default_factory=dict)


def _entry(cls, desc: str, seq: int, vocab: int, **cfg) -> ZooModel:
    def build(**kwargs):
        return cls(**{**cfg, **kwargs})

    return ZooModel(build, (InputSpec((1, seq), "int64", 0, vocab),), desc, cfg)


ZOO_MODELS: dict[str, ZooModel] = {
    "bert-tiny": _entry(Encoder, "BERT-like encoder, d=128, 2 layers, 2 heads, seq 128", 128, _VOCAB,
                        d_model=128, layers=2, heads=2),
    "bert-mini": _entry(Encoder, "BERT-like encoder, d=256, 4 layers, 4 heads, seq 128", 128, _VOCAB,
                        d_model=256, layers=4, heads=4),
    "bert-small": _entry(Encoder, "BERT-like encoder, d=512, 4 layers, 8 heads, seq 128", 128, _VOCAB,
                         d_model=512, layers=4, heads=8),
    "bert-medium": _entry(Encoder, "BERT-like encoder, d=512, 8 layers, 8 heads, seq 128", 128, _VOCAB,
                          d_model=512, layers=8, heads=8),
    "bert-base": _entry(Encoder, "BERT-base-like encoder, d=768, 12 layers, 12 heads, seq 128", 128, _VOCAB,
                        d_model=768, layers=12, heads=12),
    "gpt-tiny": _entry(Decoder, "GPT-like decoder, d=128, 2 layers, 2 heads, seq 128, causal SDPA", 128, 8192,
                       d_model=128, layers=2, heads=2),
    "gpt-mini": _entry(Decoder, "GPT-like decoder, d=256, 4 layers, 4 heads, seq 128, causal SDPA", 128, 8192,
                       d_model=256, layers=4, heads=4),
    "gpt-small": _entry(Decoder, "GPT-like decoder, d=512, 6 layers, 8 heads, seq 128, causal SDPA", 128, 8192,
                        d_model=512, layers=6, heads=8),
}
