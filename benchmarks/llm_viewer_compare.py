"""Counted prefill/decode figures against LLM-Viewer's analytical model, same config.

Counts only (no timing): the output does not depend on the machine or its load.
Default: the 4-layer GQA Llama of docs/generate.md (h=512, 8 heads, 2 KV heads,
I=1408, V=32000), prompt 128, a decode step at context 128, batch 1, float32
(LLM-Viewer's byte sizes set to 4 to match). Writes benchmarks/results/llm_viewer_compare.json
(``_results.save``).

Usage: python benchmarks/llm_viewer_compare.py [--kwargs JSON] [--prompt P] [--batch B]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flopgap.generate import count_phase, session_for
from flopgap.generate._llm_viewer import llm_viewer_estimate

CONFIG = {"num_hidden_layers": 4, "hidden_size": 512, "intermediate_size": 1408, "num_attention_heads": 8,
          "num_key_value_heads": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kwargs", default=json.dumps(CONFIG))
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    session = session_for("hf:llama", kwargs=json.loads(args.kwargs))
    rows = []
    print(f"hf:llama {args.kwargs}, batch {args.batch}, prompt {args.prompt}, decode at context {args.prompt}, "
          "float32")
    print(f"{'':26s} {'flopgap (counted)':>20s} {'LLM-Viewer':>14s} {'ratio':>7s}")
    for phase in ("prefill", "decode"):
        c = count_phase(session, phase, args.batch, args.prompt)
        lv = llm_viewer_estimate(session.config, batch=args.batch, seqlen=args.prompt, phase=phase,
                                 w_bytes=4, a_bytes=4, kv_bytes=4)
        pairs = [("FLOPs", c.flops, lv["ops"]), ("weights read (B)", c.weights, lv["load_weight"]),
                 ("KV read (B)", c.kv_read, lv["load_kv"]), ("KV written (B)", c.kv_written, lv["store_kv"]),
                 ("activations (B)", c.activations, lv["load_act"] + lv["store_act"]),
                 ("all bytes", c.bytes, lv["memory_access"])]
        for label, ours, theirs in pairs:
            ratio = ours / theirs if theirs else float("nan")
            print(f"{phase + ' ' + label:26s} {ours:20,.0f} {theirs:14,.0f} {ratio:7.3f}")
            rows.append({"phase": phase, "figure": label, "flopgap": ours, "llm_viewer": theirs, "ratio": ratio})
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import save

    figures = {"config": json.loads(args.kwargs), "prompt": args.prompt, "batch": args.batch, "rows": rows}
    print(f"wrote {save('llm_viewer_compare', figures)}")


if __name__ == "__main__":
    main()
