"""A held-out set for flopgap's latency prediction: models no design decision saw.

None of these models (nor their families' shapes) shaped the predictor, its grid or its
chains; the tuned set is ``benchmarks/predict_accuracy.py``'s torchvision and seed
models. Built from code or configs, random weights, nothing downloaded:

- timm mobile and efficient CNNs (mixed kernels, squeeze-excitation, hard-swish, ghost
  modules, multi-branch HRNet) and small vision transformers / hybrids
  (``timm.create_model(name, pretrained=False)``);
- transformers encoders and decoders from configs (``HF_HUB_OFFLINE=1``; BERT,
  DistilBERT, RoBERTa, GPT-2, and Llama/Qwen2/Mistral-style decoders with grouped-query
  attention and rotary embeddings), one forward over a prompt;
- custom MLP and depthwise-separable stacks.

The set is split once, by name, into a **development** set (``DEV``: the misses one
may study, and the method-error distribution one may fit) and a **final** set
(``FINAL``: scored and reported once, never tuned on). Every model is a factory
``() -> (module, inputs)``; ``build(name)`` calls it.

    from benchmarks.heldout import DEV, FINAL, build
"""

from __future__ import annotations

import os
from typing import Callable

import torch
from torch import nn

__all__ = ["DEV", "FINAL", "MODELS", "build", "family"]


# ------------------------------------------------------------------ timm
def _timm(name: str) -> Callable[[], tuple[nn.Module, tuple]]:
    def make():
        import timm

        torch.manual_seed(0)
        m = timm.create_model(name, pretrained=False).eval()
        size = tuple(m.pretrained_cfg.get("input_size", (3, 224, 224)))
        return m, (torch.randn(1, *size),)
    return make


# ------------------------------------------------------------------ transformers (configs only)
def _hf(arch: str, seq: int, **config) -> Callable[[], tuple[nn.Module, tuple]]:
    def make():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import transformers

        torch.manual_seed(0)
        cfg = getattr(transformers, arch + "Config")(**config)
        cls = getattr(transformers, arch + ("LMHeadModel" if arch == "GPT2" else
                                            "ForCausalLM" if arch in _DECODERS else "Model"))
        model = cls(cfg).eval()
        if hasattr(model.config, "_attn_implementation"):
            model.config._attn_implementation = "sdpa"
        ids = torch.randint(0, cfg.vocab_size, (1, seq))
        return _Decoder(model) if arch in _DECODERS or arch == "GPT2" else _Encoder(model), (ids,)
    return make


_DECODERS = ("Llama", "Qwen2", "Mistral")


class _Encoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids)[0]


class _Decoder(nn.Module):
    """One prefill forward over the prompt (no KV cache kept)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids, use_cache=False)[0]


# ------------------------------------------------------------------ custom stacks
def _mlp(width: int, depth: int, batch: int) -> Callable[[], tuple[nn.Module, tuple]]:
    def make():
        torch.manual_seed(0)
        layers = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.GELU()]
        return nn.Sequential(*layers, nn.Linear(width, 10)).eval(), (torch.randn(batch, width),)
    return make


def _dw_stack(width: int, blocks: int, hw: int, k: int = 3) -> Callable[[], tuple[nn.Module, tuple]]:
    """Depthwise k x k + pointwise 1x1 blocks (BN, ReLU) at one width and resolution."""
    def make():
        torch.manual_seed(0)
        layers = []
        for _ in range(blocks):
            layers += [nn.Conv2d(width, width, k, padding=k // 2, groups=width, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
        return nn.Sequential(*layers).eval(), (torch.randn(1, width, hw, hw),)
    return make


def _bert(hidden, layers, heads, seq, inter=None):
    return _hf("Bert", seq, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
               intermediate_size=inter or 4 * hidden, vocab_size=8000)


def _llama(arch, hidden, layers, heads, kv, seq, inter=None):
    return _hf(arch, seq, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
               num_key_value_heads=kv, intermediate_size=inter or 3 * hidden, vocab_size=8000,
               max_position_embeddings=2048)


MODELS: dict[str, Callable[[], tuple[nn.Module, tuple]]] = {
    # timm CNNs: mobile / efficient
    "timm:mixnet_s": _timm("mixnet_s"),
    "timm:mixnet_m": _timm("mixnet_m"),
    "timm:efficientnet_lite0": _timm("efficientnet_lite0"),
    "timm:mnasnet_small": _timm("mnasnet_small"),
    "timm:ghostnet_100": _timm("ghostnet_100"),
    "timm:lcnet_050": _timm("lcnet_050"),
    "timm:fbnetc_100": _timm("fbnetc_100"),
    "timm:hrnet_w18_small": _timm("hrnet_w18_small"),
    "timm:regnetx_002": _timm("regnetx_002"),
    "timm:rexnet_100": _timm("rexnet_100"),
    "timm:semnasnet_075": _timm("semnasnet_075"),
    "timm:tinynet_a": _timm("tinynet_a"),
    "timm:mobilenetv2_050": _timm("mobilenetv2_050"),
    "timm:mobilenetv3_small_050": _timm("mobilenetv3_small_050"),
    "timm:hardcorenas_a": _timm("hardcorenas_a"),
    "timm:spnasnet_100": _timm("spnasnet_100"),
    "timm:resnet10t": _timm("resnet10t"),
    "timm:repvgg_a0": _timm("repvgg_a0"),
    # timm small vision transformers and hybrids
    "timm:vit_tiny_patch16_224": _timm("vit_tiny_patch16_224"),
    "timm:deit_tiny_patch16_224": _timm("deit_tiny_patch16_224"),
    "timm:levit_128s": _timm("levit_128s"),
    "timm:convnext_atto": _timm("convnext_atto"),
    "timm:mobilevit_xxs": _timm("mobilevit_xxs"),
    "timm:mobilevitv2_050": _timm("mobilevitv2_050"),
    "timm:edgenext_xx_small": _timm("edgenext_xx_small"),
    "timm:efficientvit_b0": _timm("efficientvit_b0"),
    # transformers encoders and decoders, from configs
    "hf:bert-mini": _bert(256, 4, 4, 128),
    "hf:bert-small-seq256": _bert(512, 4, 8, 256),
    "hf:distilbert-tiny": _hf("DistilBert", 128, dim=256, n_layers=3, n_heads=4, hidden_dim=1024, vocab_size=8000),
    "hf:roberta-tiny": _hf("Roberta", 96, hidden_size=384, num_hidden_layers=3, num_attention_heads=6,
                           intermediate_size=1536, vocab_size=8000),
    "hf:gpt2-tiny": _hf("GPT2", 128, n_embd=256, n_layer=4, n_head=4, vocab_size=8000,
                          bos_token_id=0, eos_token_id=0),
    "hf:llama-gqa-tiny": _llama("Llama", 256, 4, 8, 2, 128),
    "hf:qwen2-gqa-tiny": _llama("Qwen2", 384, 3, 6, 2, 96),
    "hf:mistral-gqa-tiny": _llama("Mistral", 256, 4, 8, 4, 160, inter=704),
    # custom stacks
    "custom:mlp-512x6-b1": _mlp(512, 6, 1),
    "custom:mlp-1024x4-b16": _mlp(1024, 4, 16),
    "custom:mlp-256x12-b64": _mlp(256, 12, 64),
    "custom:dw-separable-64x8@56": _dw_stack(64, 8, 56),
    "custom:dw-separable-128x6@28": _dw_stack(128, 6, 28),
    "custom:dw-separable-256x4@14-k5": _dw_stack(256, 4, 14, 5),
}

# one development model in three, by a fixed rule over the sorted names, so that no
# choice about which models are scored could follow their scores
_ORDER = sorted(MODELS)
DEV: tuple[str, ...] = tuple(n for i, n in enumerate(_ORDER) if i % 3 == 0)
FINAL: tuple[str, ...] = tuple(n for n in _ORDER if n not in DEV)


def family(name: str) -> str:
    """timm CNN, timm ViT/hybrid, transformers or custom (for the per-family table)."""
    if name.startswith("hf:"):
        return "transformers"
    if name.startswith("custom:"):
        return "custom"
    vit = ("vit_", "deit_", "levit", "convnext", "mobilevit", "edgenext", "efficientvit")
    return "timm ViT/hybrid" if any(v in name for v in vit) else "timm CNN"


def build(name: str) -> tuple[nn.Module, tuple]:
    """(module in eval mode, inputs) of one held-out model."""
    if name not in MODELS:
        raise KeyError(f"no held-out model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]()
