"""transformers and timm models by name: exact closed forms for BERT-base, GPT-2 small
and a GQA Llama (arithmetic in the comments), meta counting of a 7B config, specs,
keyword inputs and their errors."""

import json
import subprocess
import time

import pytest
import torch

from conftest import FLOPGAP
from flopgap.count import count
from flopgap.errors import UsageError
from flopgap.models import Inputs, load_model, make_inputs, parse_input_spec, resolve_inputs, with_seq

pytest.importorskip("transformers")


def _count(spec, kwargs=None, seq=None, meta=False, inputs=None):
    loaded = load_model(spec, kwargs or {}, meta=meta)
    specs = resolve_inputs(loaded, inputs, None, seq)
    return count(loaded.module, make_inputs(specs), model=spec, meta=meta)


# ------------------------------------------------------------------ closed forms
def bert_flops(L=12, h=768, H=12, I=3072, S=128):
    d = h // H
    emb = 2 * S * h + 5 * S * h  # word + token-type + position adds, LayerNorm (affine: 5/element)
    layer = (3 * (2 * S * h * h + S * h)  # q, k, v projections with bias
             + H * S * S * (4 * d + 6)  # SDPA, all S*S pairs: 2 matmuls (2*2d per pair) + scale/softmax 6
             + 2 * S * h * h + S * h + S * h + 5 * S * h  # output projection, residual, LayerNorm
             + 2 * S * h * I + S * I + S * I  # intermediate with bias, GELU
             + 2 * S * I * h + S * h + S * h + 5 * S * h)  # output with bias, residual, LayerNorm
    pooler = 2 * h * h + h + h  # dense on [CLS] + bias, tanh
    return emb + L * layer + pooler


def gpt2_flops(L=12, h=768, H=12, V=50257, S=128):
    d, I = h // H, 4 * h
    model = S + S * h + 3 * S + 3  # position ids (arange + past), wte + wpe, packed-sequence check
    layer = (5 * S * h + 2 * S * h * 3 * h + 3 * h * S  # ln_1, c_attn (Conv1D = addmm with bias)
             + H * (S * (S + 1) // 2) * (4 * d + 6)  # causal SDPA: the S(S+1)/2 unmasked pairs
             + 2 * S * h * h + S * h + S * h  # c_proj with bias, residual
             + 5 * S * h + 2 * S * h * I + S * I  # ln_2, c_fc with bias
             + 8 * S * I  # gelu_new: 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3))) as 8 element-wise ops
             + 2 * S * I * h + S * h + S * h)  # c_proj with bias, residual
    return model + L * layer + 5 * S * h + 2 * S * h * V  # ln_f, lm_head (tied to wte, no bias)


def llama_flops(L, h, H, K, I, V, B, S, P, *, cached, lm_rows=None):
    """Llama forward of S new tokens per sequence over P cached ones (SDPA, RoPE, SwiGLU).
    ``cached``: called with a KV cache (generation) - no packed-sequence check; else the
    plain forward, which checks position ids for packing (sub, diff, ne, cumsum, eq, all)."""
    d, T = h // H, B * S
    rows = T if lm_rows is None else lm_rows
    pairs = S * (S + 1) // 2 if P == 0 else S * (P + S)  # causal prefill, or S=1 attending P+1 keys
    model = S + (0 if cached else 3 * S + 3)  # position ids (arange + past); packing check
    rotary = S * d // 2 + 4 * S * d  # t*inv_freq, cos, sin, two * attention_scaling (position_ids is [1, S])
    norm = 4 * T * h + 2 * T  # RMSNorm: pow, mean, mul, * weight per element; + eps, rsqrt per row
    layer = (norm + 2 * T * h * (H * d) + 2 * 2 * T * h * (K * d)  # q, k, v (GQA: K heads for k and v)
             + 3 * B * H * S * d + B * H * S * d // 2  # RoPE on q: q*cos + rotate_half(q)*sin (neg on half)
             + 3 * B * K * S * d + B * K * S * d // 2  # RoPE on k
             + B * H * pairs * (4 * d + 6)  # SDPA per query head (GQA shares K/V, not the work)
             + 2 * T * (H * d) * h + T * h  # o_proj, residual
             + norm + 3 * 2 * T * h * I + 2 * T * I + T * h)  # gate/up/down, silu and the product, residual
    return model + rotary + L * layer + norm + 2 * rows * h * V


def test_bert_base_exact():
    r = _count("hf:bert", meta=True)  # seq 128 by default
    assert r.flops == bert_flops()  # 22,392,768,000 at S=128 (12 layers, d=768)
    assert r.coverage == 1.0
    assert r.params == 109_482_240  # BERT-base with pooler


def test_gpt2_small_exact():
    r = _count("hf:gpt2", meta=True)
    assert r.flops == gpt2_flops()
    assert r.params == 124_439_808  # GPT-2 small, lm_head tied to wte
    assert r.coverage == 1.0


def test_small_bert_real_equals_meta_and_closed_form():
    kw = {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 256}
    real, meta = _count("hf:bert", kw, seq=16), _count("hf:bert", kw, seq=16, meta=True)
    assert real.flops == meta.flops == bert_flops(L=2, h=128, H=4, I=256, S=16)


GQA = {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 8,
       "num_key_value_heads": 2, "vocab_size": 1000}


def test_gqa_llama_forward_exact():
    r = _count("hf:llama", GQA, seq=24)
    assert r.flops == llama_flops(2, 256, 8, 2, 512, 1000, 1, 24, 0, cached=False)
    assert r.coverage == 1.0


def test_llama_7b_meta_in_seconds_matches_closed_form():
    t0 = time.perf_counter()
    r = _count("hf:llama", seq=2048, meta=True)
    elapsed = time.perf_counter() - t0
    # LlamaConfig defaults: 32 layers, h=4096, 32 heads (MHA), I=11008, V=32000
    expected = llama_flops(32, 4096, 32, 32, 11008, 32000, 1, 2048, 0, cached=False)
    assert abs(r.flops - expected) / expected < 0.01  # the acceptance bound; it is in fact exact:
    assert r.flops == expected
    assert r.params == 6_738_415_616
    assert elapsed < 60  # seconds, not minutes, even on a loaded 2-core machine


def test_meta_count_with_an_attention_mask_keyword_input():
    """transformers checks mask.all() on its way to the causal fast path: on meta
    tensors that scalar reads as 1 (all ones), so the count matches a real all-ones mask."""
    kw = {**GQA, "num_hidden_layers": 1}
    ids, mask = "input_ids=1x12:int64[0,1000)", "attention_mask=1x12:int64[1,2)"
    real = _count("hf:llama", kw, inputs=[ids, mask])
    meta = _count("hf:llama", kw, inputs=[ids, mask], meta=True)
    assert real.flops == meta.flops
    assert real.inputs == ["input_ids=1x12:int64", "attention_mask=1x12:int64"]


# ------------------------------------------------------------------ specs and inputs
def test_named_input_spec_and_inputs_record():
    s = parse_input_spec("attention_mask=2x8:int64[1,2)")
    assert (s.name, s.shape, s.dtype, str(s)) == ("attention_mask", (2, 8), "int64", "attention_mask=2x8:int64[1,2)")
    x = make_inputs((parse_input_spec("2x3"), s))
    assert isinstance(x, Inputs) and len(x) == 1 and list(x.kwargs) == ["attention_mask"]
    assert x.args[0].shape == (2, 3) and bool((x.kwargs["attention_mask"] == 1).all())
    with pytest.raises(UsageError, match="named twice"):
        make_inputs((s, s))


def test_seq_applies_to_token_inputs_only():
    s = (parse_input_spec("input_ids=1x128:int64[0,10)"), parse_input_spec("1x3x8x8"))
    assert with_seq(s, 32)[0].shape == (1, 32) and with_seq(s, 32)[1].shape == (1, 3, 8, 8)
    with pytest.raises(UsageError, match="token inputs"):
        with_seq((parse_input_spec("1x3x8x8"),), 32)


def test_hf_config_json_path(tmp_path):
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], **GQA}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    by_file, by_name = _count(f"hf:{path}", seq=8), _count("hf:llama", GQA, seq=8)
    assert by_file.flops == by_name.flops


def test_timm_default_input_size_from_its_config():
    pytest.importorskip("timm")
    loaded = load_model("timm:efficientnet_b3", meta=True)
    assert [str(s) for s in loaded.example_inputs] == ["1x3x288x288"]  # pretrained_cfg input_size
    r = count(loaded.module, make_inputs(resolve_inputs(loaded)), meta=True)
    assert r.coverage == 1.0 and r.flops > 0


def _cli(*args):
    return subprocess.run([FLOPGAP, *args], capture_output=True, text=True, timeout=300)


_SLOW = pytest.mark.slow  # a fresh process importing transformers: ~5-15 s each on a loaded 2-core machine


@pytest.mark.parametrize("args, message", [
    (("count", "hf:nope"), "unknown hf architecture 'nope'"),
    pytest.param(("count", "hf:bert", "--kwargs", '{"num_layerz": 2}'), "'num_layerz' not a field of BertConfig",
                 marks=_SLOW),
    pytest.param(("count", "hf:llama"), "count it with --meta", marks=_SLOW),
    pytest.param(("count", "timm:not_a_model_xyz"), "unknown timm model", marks=_SLOW),
    (("count", "seed:ex2-deep", "--seq", "8"), "--seq applies to token inputs"),
    pytest.param(("count", "hf:bert", "--input", "input_ids=1x8:int64[0,10)", "--input",
                  "input_ids=1x8:int64[0,10)"), "keyword input named twice", marks=_SLOW),
])
def test_cli_errors_are_one_line(args, message):
    p = _cli(*args)
    assert p.returncode == 2
    assert p.stderr.startswith("error: ") and message in p.stderr and p.stderr.count("\n") == 1


@_SLOW
def test_cli_keyword_inputs_and_models_listing():
    p = _cli("count", "hf:bert", "--kwargs", '{"num_hidden_layers": 1}', "--input", "input_ids=1x8:int64[0,100)",
             "--input", "attention_mask=1x8:int64[1,2)", "--json", "-")
    assert p.returncode == 0 and p.stderr == ""
    data = json.loads(p.stdout)
    assert data["inputs"] == ["input_ids=1x8:int64", "attention_mask=1x8:int64"]
    assert data["totals"]["coverage"] == 1.0
    p = _cli("models", "--source", "hf")
    assert p.returncode == 0 and "hf:llama" in p.stdout and "hf:t5-encoder" in p.stdout


@_SLOW
def test_meta_7b_cli_in_seconds():
    p = _cli("count", "hf:llama", "--meta", "--seq", "2048", "--json", "-")
    assert p.returncode == 0 and p.stderr == ""
    assert json.loads(p.stdout)["totals"]["flops"] == llama_flops(32, 4096, 32, 32, 11008, 32000, 1, 2048, 0,
                                                                  cached=False)
