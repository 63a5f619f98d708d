"""Generation: exact per-phase counts of a GQA Llama (prefill of P tokens and one decode
step against a cache of P tokens, bytes split into weights / KV cache / activations,
arithmetic in the comments), timing plumbing with a fake clock, findings, the CUDA path
with fakes, and the CLI."""

import json
import subprocess
from contextlib import contextmanager

import pytest
import torch

from conftest import FLOPGAP
from flopgap.errors import UsageError

pytest.importorskip("transformers")

from flopgap.generate import GenerateOptions, count_phase, run_generation, session_for  # noqa: E402
from flopgap.machine import MachineProfile  # noqa: E402
from test_models_hf import llama_flops  # noqa: E402

L, h, H, K, I, V = 2, 256, 8, 2, 512, 1000  # a GQA Llama: 8 query heads share 2 KV heads
CFG = {"num_hidden_layers": L, "hidden_size": h, "intermediate_size": I, "num_attention_heads": H,
       "num_key_value_heads": K, "vocab_size": V}
D = h // H  # head dim 32
PARAMS = V * h + L * (h * h + 2 * h * K * D + h * h + 3 * h * I + 2 * h) + h + h * V  # embed, layers, norm, head
ROPE_BUFFER = (D // 2) * 4  # inv_freq, float32: read once per forward


@pytest.fixture(scope="module")
def session():
    return session_for("hf:llama", kwargs=CFG)


@pytest.mark.parametrize("batch", [1, 3])
def test_prefill_exact(session, batch):
    P = 16
    c = count_phase(session, "prefill", batch, P)
    # logits for the last position only (logits_to_keep=1, as model.generate() asks)
    assert c.flops == llama_flops(L, h, H, K, I, V, batch, P, 0, cached=True, lm_rows=batch)
    assert c.tokens == batch * P and c.coverage == 1.0
    # weights: every parameter once, but only the B*P embedding rows looked up
    assert c.weights == 4 * (PARAMS - V * h + batch * P * h) + ROPE_BUFFER
    kv = batch * K * P * D * 4  # one layer's keys (or values), float32
    assert c.kv_written == L * 2 * kv  # DynamicCache: cat(empty, new) writes the P new rows
    assert c.kv_read == L * 2 * kv  # SDPA reads them back


@pytest.mark.parametrize("batch", [1, 4])
def test_decode_step_with_a_cache_of_p_tokens_exact(session, batch):
    P = 16
    c = count_phase(session, "decode", batch, P)
    assert c.flops == llama_flops(L, h, H, K, I, V, batch, 1, P, cached=True)
    assert c.tokens == batch and c.context == P
    # one token per sequence: one embedding row each; every other weight read in full
    assert c.weights == 4 * (PARAMS - V * h + batch * h) + ROPE_BUFFER
    row = batch * K * D * 4  # one token's keys (or values) in one layer
    # DynamicCache: cat(past, new) reads the P past rows and writes P+1; SDPA reads the P+1
    assert c.kv_read == L * 2 * (P * row + (P + 1) * row)
    assert c.kv_written == L * 2 * (P + 1) * row


def test_decode_step_with_a_static_cache_writes_one_row():
    s = session_for("hf:llama", kwargs=CFG, cache="static")
    P, batch = 16, 2
    c = count_phase(s, "decode", batch, P)
    row = batch * K * D * 4
    assert c.kv_written == L * 2 * row  # index_copy_ of the new token only
    assert c.kv_read == L * 2 * (P + 1) * row  # SDPA over the preallocated P+1 rows (masked)


def test_decode_flops_per_token_about_two_per_parameter(session):
    """The field's rule of thumb: a decode step does ~2 FLOPs per weight per token
    (plus attention over the cache); the embedding is a lookup, not a matmul."""
    c = count_phase(session, "decode", 1, 16)
    matmul_params = PARAMS - V * h - (2 * L + 1) * h  # minus embedding and norm weights
    assert 1.0 < c.flops / (2 * matmul_params) < 1.05


# ------------------------------------------------------------------ timing plumbing and findings
def _fake_timer(monkeypatch, prefill_s: float, step_s: float):
    """Replace the model calls the timer makes by FakeClock models of fixed duration."""
    from flopgap.generate import _run
    from flopgap.timing import FakeClock, FakeLoad, TimerOptions, measure

    def fake_time_call(fn, *, name, options, clock=None):
        duration = step_s if "decode" in name else prefill_s if "prefill" in name else 1e-6
        fake = FakeClock(duration, read_s=1e-9)
        # a quiet scripted machine: the sentinel must not see this machine's real load
        return measure(fake.model, (), TimerOptions(**options), name=name, clock=fake, load=FakeLoad())

    monkeypatch.setattr(_run, "time_call", fake_time_call)


def test_run_generation_with_a_fake_clock(monkeypatch):
    _fake_timer(monkeypatch, prefill_s=0.016, step_s=0.004)
    profile = MachineProfile.synthetic(peak=1e11, mem_bandwidth=1e10, cache_bytes=1000)
    opts = GenerateOptions(prompt=16, new_tokens=4, batches=(1, 2), max_time=5.0, precision=0.05, threads=1)
    r = run_generation("hf:llama", kwargs=CFG, options=opts, profile=profile)
    assert [(p.batch, p.context) for p in r.points] == [(1, 17), (2, 17)]  # mean context 16 + (4-1)//2
    p = r.headline
    assert p.prefill_time.median_s == pytest.approx(0.016) and p.decode_time.median_s == pytest.approx(0.004)
    assert p.decode_time.tokens_per_s == pytest.approx(250)  # 1 token / 4 ms
    assert p.prefill_time.tokens_per_s == pytest.approx(1000)  # 16 prompt tokens / 16 ms
    assert p.decode_time.precision_met and p.decode_time.n_samples >= 10
    # floors: bytes / 10 GB/s (all bytes above the 1000-byte cache), FLOPs / 100 GFLOP/s
    assert p.decode_floors.memory_s == pytest.approx(p.decode.bytes / 1e10)
    assert p.decode_floors.compute_s == pytest.approx(p.decode.flops / 1e11)
    # mean decode step over contexts 16..19 = mean of the first and last (affine in the context)
    assert r.decode_first.context == 16 and r.decode_last.context == 19
    kinds = [f["kind"] for f in r.findings]
    assert kinds[:2] == ["decode-roofline", "prefill-roofline"] and "batching" in kinds
    claim = next(f for f in r.findings if f["kind"] == "seed-claim")
    # a decode token: 4 ms; a prefill token: 1 ms; for about the same FLOPs per token
    assert claim["verdict"] == "holds" and "4.0x the time" in claim["text"]
    data = r.to_dict()
    assert data["schema"] == "flopgap.generate/1" and json.dumps(data)
    assert data["points"][0]["decode"]["utilisation"]["mbu"] == pytest.approx(p.decode.bytes / 0.004 / 1e10)


def test_an_imprecise_timing_gets_no_verdict(monkeypatch):
    _fake_timer(monkeypatch, prefill_s=0.016, step_s=0.004)
    from flopgap.generate import _findings
    from flopgap.generate._timed import PhaseTiming

    profile = MachineProfile.synthetic()
    r = run_generation("hf:llama", kwargs=CFG, profile=profile,
                       options=GenerateOptions(prompt=8, new_tokens=2, max_time=0.3))
    p = r.headline
    p.decode_time = PhaseTiming(0.004, 0.003, 0.006, 3, 3, 1, "cpu", False, 1, ["the machine was busy"])
    claim = next(f for f in _findings.findings(r, profile) if f["kind"] == "seed-claim")
    assert claim["verdict"] == "inconclusive" and "inconclusive at this noise" in claim["text"]


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": 0}, "--prompt"), ({"new_tokens": 0}, "--new-tokens"), ({"batches": (0,)}, "--batch"),
    ({"cache": "paged"}, "--cache"), ({"max_time": 0}, "--max-time"), ({"cuda_graph": True}, "--cuda-graph"),
])
def test_options_are_validated_once(kwargs, message):
    with pytest.raises(UsageError, match=message):
        GenerateOptions(**kwargs)


def test_only_causal_lms_generate():
    with pytest.raises(UsageError, match="not a transformers causal LM"):
        session_for("hf:bert", kwargs={"num_hidden_layers": 1})


def test_context_beyond_the_position_limit_is_refused():
    with pytest.raises(UsageError, match="positions"):
        run_generation("hf:gpt2", kwargs={"n_layer": 1, "n_positions": 64}, profile=MachineProfile.synthetic(),
                       options=GenerateOptions(prompt=60, new_tokens=8, time=False))


# ------------------------------------------------------------------ CUDA path, with fakes
class _FakeStream:
    def __init__(self, log):
        self.log = log

    def wait_stream(self, other):
        self.log.append("wait")


class _FakeGraph:
    def __init__(self, log):
        self.log = log

    def replay(self):
        self.log.append("replay")


class _FakeCuda:
    def __init__(self):
        self.log = []
        self.capturing = False

    def Stream(self):
        return _FakeStream(self.log)

    def current_stream(self):
        return _FakeStream(self.log)

    @contextmanager
    def stream(self, s):
        self.log.append("side")
        yield

    def CUDAGraph(self):
        return _FakeGraph(self.log)

    @contextmanager
    def graph(self, g):
        self.log.append("capture")
        self.capturing = True
        yield
        self.capturing = False

    def synchronize(self):
        self.log.append("sync")


def test_cuda_graph_step_warms_up_on_a_side_stream_then_captures_once():
    from flopgap.generate._cuda import graph_step

    cuda = _FakeCuda()
    calls = []
    replay = graph_step(lambda: calls.append(cuda.capturing), cache_kind="static", cuda=cuda, warmup=3)
    assert calls == [False, False, False, True]  # 3 warm-up calls, then one call under capture
    assert cuda.log[:2] == ["wait", "side"] and "capture" in cuda.log
    replay()
    assert cuda.log[-1] == "replay"
    with pytest.raises(UsageError, match="--cache static"):
        graph_step(lambda: None, cache_kind="dynamic", cuda=cuda)


def test_kernel_launches_per_call_from_profiler_events():
    from types import SimpleNamespace

    from flopgap.generate._cuda import launches_per_call

    counts = iter([7, 5, 9])

    class FakeProfile:
        def __enter__(self):
            self.n = next(counts)
            return self

        def __exit__(self, *exc):
            return False

        def events(self):
            return [SimpleNamespace(name="cudaLaunchKernel")] * self.n + [SimpleNamespace(name="aten::mm")]

    assert launches_per_call(lambda: None, cuda=_FakeCuda(), profile=FakeProfile, calls=3) == 7.0  # median


# ------------------------------------------------------------------ CLI
def _cli(*args):
    return subprocess.run([FLOPGAP, *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_generate_counts_without_timing():
    p = _cli("generate", "hf:llama", "--kwargs", json.dumps(CFG), "--prompt", "16", "--new-tokens", "4",
             "--no-time", "--batch", "1,2", "--json", "-")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert [(q["batch"], q["context"]) for q in data["points"]] == [(1, 17), (2, 17)]
    assert data["points"][0]["decode"]["count"]["flops"] == llama_flops(L, h, H, K, I, V, 1, 1, 17, cached=True)


def test_cli_generate_refuses_a_non_causal_model():
    p = _cli("generate", "seed:ex2-deep")
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "causal LM" in p.stderr


@pytest.mark.slow
def test_cli_generate_times_a_tiny_model():
    p = _cli("generate", "hf:llama", "--kwargs", json.dumps(CFG), "--prompt", "16", "--new-tokens", "4",
             "--max-time", "0.3", "--threads", "1")
    assert p.returncode == 0, p.stderr
    assert "time to first token" in p.stdout and "tokens/s" in p.stdout and "findings" in p.stdout
