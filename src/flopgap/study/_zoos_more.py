"""Zoos of the models people deploy now, for ``flopgap study zoo hf|timm``.

- ``hf``: transformers encoders and decoders built from their config classes (random
  weights, no download): BERT/DistilBERT/T5 encoders from 2 to 12 layers, GPT-2 and
  Llama-style decoders with multi-head (MHA) and grouped-query (GQA) attention, at
  sequence lengths 32 to 512. Decoders here are timed as one forward pass over the
  sequence (a prefill); ``flopgap study generation`` times decode.
- ``timm``: efficient and mobile image models (MobileNet V3/V4, EfficientNet, GhostNet,
  MobileViT, FastViT, RepViT, EfficientFormer, LCNet, LeViT, EdgeNeXt, ...), at the
  input size of each model's own config, with ResNet-18 as the dense baseline.

Each entry is ``(label, spec, config overrides, sequence length)``.
"""

from __future__ import annotations

from flopgap.study._runner import Item

__all__ = ["MORE_ZOOS", "zoo_entries"]

_ENC = {"num_attention_heads": 4}
_DEC_SMALL = {"num_hidden_layers": 4, "hidden_size": 512, "intermediate_size": 1408, "num_attention_heads": 8}

HF_ZOO: list[tuple[str, str, dict, int]] = [
    ("bert-2L-128 s128", "hf:bert", {"num_hidden_layers": 2, "hidden_size": 128, "intermediate_size": 512,
                                     "num_attention_heads": 2}, 128),
    ("bert-4L-256 s128", "hf:bert", {"num_hidden_layers": 4, "hidden_size": 256, "intermediate_size": 1024, **_ENC},
     128),
    ("bert-4L-512 s128", "hf:bert", {"num_hidden_layers": 4, "hidden_size": 512, "intermediate_size": 2048,
                                     "num_attention_heads": 8}, 128),
    ("bert-base s32", "hf:bert", {}, 32),
    ("bert-base s128", "hf:bert", {}, 128),
    ("bert-base s512", "hf:bert", {}, 512),
    ("distilbert s128", "hf:distilbert", {}, 128),
    ("t5-small-encoder s128", "hf:t5-encoder", {}, 128),
    ("gpt2-6L s128", "hf:gpt2", {"n_layer": 6}, 128),
    ("gpt2 s128", "hf:gpt2", {}, 128),
    ("llama-4L MHA s128", "hf:llama", {**_DEC_SMALL, "num_key_value_heads": 8}, 128),
    ("llama-4L GQA s128", "hf:llama", {**_DEC_SMALL, "num_key_value_heads": 2}, 128),
    ("llama-4L GQA s512", "hf:llama", {**_DEC_SMALL, "num_key_value_heads": 2}, 512),
    ("qwen2-4L GQA s128", "hf:qwen2", {**_DEC_SMALL, "num_key_value_heads": 2, "vocab_size": 32000}, 128),
]

TIMM_ZOO: list[tuple[str, str, dict, int | None]] = [
    (name, f"timm:{name}", {}, None) for name in (
        "mobilenetv3_small_100", "mobilenetv3_large_100", "mobilenetv4_conv_small", "efficientnet_b0",
        "efficientnet_lite0", "ghostnet_100", "mobilevit_xxs", "mobilevitv2_050", "fastvit_t8", "repvit_m1",
        "efficientformer_l1", "lcnet_100", "mnasnet_100", "tinynet_a", "regnetx_004", "edgenext_xx_small",
        "levit_128s", "convnext_atto", "efficientvit_b0", "mobileone_s0", "resnet18")
]

MORE_ZOOS = {"hf": HF_ZOO, "timm": TIMM_ZOO}


def zoo_entries(zoo: str, batches) -> list[Item]:
    """The items of zoo ``zoo`` at every batch size."""
    items = []
    for label, spec, kwargs, seq in MORE_ZOOS[zoo]:
        for b in batches:
            items.append(Item(model=label, key=f"b{int(b)}", spec=spec, batch=int(b),
                              kwargs=tuple(sorted(kwargs.items())), seq=seq))
    return items
