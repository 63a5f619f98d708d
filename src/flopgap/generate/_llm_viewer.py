"""LLM-Viewer's analytical model of a Llama-style decoder, for comparison with the
counted figures (hahnyuan/LLM-Viewer, ``model_analyzer.py`` and ``configs/Llama.py``;
re-derived here from its published formulas, not its code).

Per decoder layer, at batch ``B`` and sequence length ``S`` (prefill) or context ``S``
(one decode step), with bytes per weight / activation / KV element ``w, a, kv``:

- each linear layer ``ic -> oc`` (q, k, v, o, gate, up, down): ``2*ic*oc*B*S`` OPs
  (``B`` in decode), weights ``ic*oc*w``, input ``ic*B*S*a``; its output ``oc*B*S*a``,
  or for k and v the KV cache write ``oc*B*S*kv``;
- attention without fused kernels: ``qk`` and ``sv`` ``2*S*S*d*H*B`` OPs each in prefill
  (every score of the S x S square) and ``2*S*d*H*B`` in decode; softmax ``5`` OPs per
  score; the score matrix stored and loaded once each; K and V read from the cache
  (``S*d*B*K*kv`` each, K doubled in prefill);
- two norms at ``7`` OPs per element, two residual adds at ``1``, the MLP activation at
  ``2`` per element of ``hidden_size`` (the model's own choice: the SwiGLU product runs
  over ``intermediate_size``);
- after the layers, the LM head: ``2*B*S*h*V`` OPs in prefill (every position) and
  ``2*B*h*V`` in decode; the embedding lookup, RoPE and the final norm are not counted.

Every layer is the same, so layer totals are multiplied by ``num_hidden_layers``.
"""

from __future__ import annotations

__all__ = ["llm_viewer_estimate"]

_FIELDS = ("ops", "load_weight", "load_act", "store_act", "load_kv", "store_kv")


def llm_viewer_estimate(config, *, batch: int, seqlen: int, phase: str, w_bytes: float = 2, a_bytes: float = 2,
                        kv_bytes: float | None = None) -> dict[str, float]:
    """``{ops, load_weight, load_act, store_act, load_kv, store_kv, memory_access}`` of
    one ``prefill`` of ``seqlen`` tokens or one ``decode`` step at context ``seqlen``."""
    if phase not in ("prefill", "decode"):
        raise ValueError(f"phase must be prefill or decode, got {phase!r}")
    kv = a_bytes if kv_bytes is None else kv_bytes
    h, H = config.hidden_size, config.num_attention_heads
    K = getattr(config, "num_key_value_heads", None) or H
    inter, V, L = config.intermediate_size, config.vocab_size, config.num_hidden_layers
    d = h // H
    B, S = batch, seqlen
    rows = B * S if phase == "prefill" else B  # tokens through the linear layers
    layer = dict.fromkeys(_FIELDS, 0.0)

    def add(**kw):
        for k, v in kw.items():
            layer[k] += v

    linears = {"q": (h, h), "k": (h, h * K / H), "v": (h, h * K / H), "o": (h, h),
               "gate": (h, inter), "up": (h, inter), "down": (inter, h)}
    for name, (ic, oc) in linears.items():
        is_kv = name in ("k", "v")
        add(ops=2 * ic * oc * rows, load_weight=ic * oc * w_bytes, load_act=ic * rows * a_bytes,
            store_act=0 if is_kv else oc * rows * a_bytes, store_kv=oc * rows * kv if is_kv else 0)
    if phase == "prefill":
        add(ops=2 * 2 * S * S * d * H * B + 5 * B * H * S * S,
            store_act=S * S * B * H * a_bytes + S * d * B * H * a_bytes + B * H * S * S * a_bytes,
            load_act=S * S * B * H * a_bytes + B * H * S * S * a_bytes,
            load_kv=S * d * B * K * 2 * kv + S * d * B * K * kv)
    else:
        add(ops=2 * 2 * S * d * H * B + 5 * B * H * S,
            load_act=d * B * H * a_bytes + S * B * H * a_bytes + B * H * S * a_bytes,
            store_act=S * B * H * a_bytes + d * B * H * a_bytes + B * H * S * a_bytes,
            load_kv=2 * S * d * B * K * kv)
    add(ops=2 * 7 * rows * h + 2 * rows * h + 2 * rows * h,  # norms, residual adds, MLP activation
        load_act=2 * rows * h * a_bytes + 2 * rows * h * a_bytes + 2 * rows * h * a_bytes,
        store_act=2 * rows * h * a_bytes + 2 * rows * h * a_bytes + rows * h * a_bytes)
    total = {k: v * L for k, v in layer.items()}
    head_rows = B * S if phase == "prefill" else B
    total["ops"] += 2 * head_rows * h * V
    total["load_weight"] += h * V * w_bytes
    total["load_act"] += head_rows * h * a_bytes
    total["store_act"] += head_rows * V * a_bytes
    total["memory_access"] = sum(total[k] for k in _FIELDS if k != "ops")
    return total
