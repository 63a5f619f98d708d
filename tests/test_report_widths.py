"""Terminal tables fit 100 columns: nothing cut to "…", every table row closed, optional
columns left out with a note; at a wide console every column is there."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console

from flopgap.count import count
from flopgap.explain import build_explanation
from flopgap.explain._attribute import Attribution
from flopgap.machine import MachineProfile
from flopgap.models import load_model
from flopgap.report.count_view import render_count
from flopgap.report.explain_view import render_explanation, render_machine
from flopgap.report.variants_view import render_variants
from flopgap.variants import VariantRow, VariantsResult

_BOX = "┃│┏┡└┗╇━─"


def _render(fn, width: int = 100) -> str:
    console = Console(width=width, record=True, highlight=False)
    fn(console)
    return console.export_text()


def _fits(text: str, width: int = 100) -> None:
    for line in text.splitlines():
        assert len(line) <= width, line
        assert "…" not in line, line  # no cell cut to an ellipsis
        if line.startswith(("│", "┃")):
            assert line.rstrip().endswith(("│", "┃")), f"table row cropped: {line!r}"


@pytest.fixture(scope="module")
def mobilenet_count():
    loaded = load_model("torchvision:mobilenet_v3_small", meta=True)
    return count(loaded.module, (torch.randn(1, 3, 224, 224),), model=loaded.spec, meta=True)


def test_count_fits_100_columns_and_wide_shows_every_column(mobilenet_count):
    text = _render(lambda c: render_count(mobilenet_count, c, depth=3, top=5))
    _fits(text)
    assert "Conv2dNormActivation" in text and "features.2.block.0.0" in text  # names kept whole
    assert "not shown at this width: MACs" in text and "flopgap --wide" in text
    wide = _render(lambda c: render_count(mobilenet_count, c, depth=3, top=5), width=400)
    assert "MACs" in wide.splitlines()[3] and "not shown" not in wide


def test_count_backward_fits():
    loaded = load_model("torchvision:resnet18")
    c = count(loaded.module, (torch.randn(1, 3, 64, 64),), model=loaded.spec, backward=True)
    _fits(_render(lambda con: render_count(c, con, depth=2, top=5)))


def _machine_profile() -> MachineProfile:
    prof = MachineProfile.synthetic(quick=False)
    for name, unit, v in (("peak_flops.fp32.conv3x3", "FLOP/s", 2.38e11), ("peak_flops.int8.mm", "FLOP/s", 1.9e12),
                          ("mem_bandwidth.triad", "B/s", 7.53e10), ("dispatch_overhead_s", "s", 8.8e-7),
                          ("cache_bandwidth.triad", "B/s", 1.01e11), ("module_overhead_s", "s", 1.9e-6)):
        prof.spreads[name] = {"value": v, "p25": 0.98 * v, "p75": 1.02 * v, "min": 0.9 * v, "max": 1.1 * v,
                              "unit": unit, "samples": 25}
    return prof


def test_machine_fits_and_names_its_figures_whole():
    text = _render(lambda c: render_machine(_machine_profile(), c))
    _fits(text)
    assert "peak_flops.fp32.conv3x3" in text and "cache_bandwidth.triad" in text


def test_explain_fits_with_long_module_names(mobilenet_count):
    real = count(load_model("torchvision:mobilenet_v3_small").module, (torch.randn(1, 3, 224, 224),),
                 model="torchvision:mobilenet_v3_small")
    n = len(real.ops)
    times = [None if r.is_free else 1e-5 * (1 + i % 7) for i, r in enumerate(real.ops)]
    att = Attribution(times, [0] * n, 3, sum(t for t in times if t) * 1.2, sum(t for t in times if t))
    ex = build_explanation(real, att, MachineProfile.synthetic())
    text = _render(lambda c: render_explanation(ex, c, top=10, depth=3))
    _fits(text)
    assert "features.10.block.2.fc2" in text or "features.9.block.2.fc2" in text or "block.2.fc" in text
    wide = _render(lambda c: render_explanation(ex, c, top=10, depth=3), width=400)
    assert "roofline" in wide and "GB/s" in wide


def test_variants_fits():
    rows = []
    for name, sp, extra in (("eager", 1.0, {}), ("int8-dynamic", 0.042, {"ops": 13}),
                            ("compile-max-autotune", 0.23, {"compiled": True}), ("channels_last", 1.0, {})):
        rows.append(VariantRow(name, 32, None, "ok" if name != "channels_last" else "no-op", latency_s=1.01e-4 / sp,
                               latency_ci=(1e-4 / sp, 1.02e-4 / sp), eager_latency_s=1.01e-4, speedup=sp,
                               speedup_ci=(0.98 * sp, 1.02 * sp), throughput=32 / (1e-4 / sp), max_abs_err=0.011,
                               max_rel_err=0.013, peak_mem_bytes=42_100, ops_eager=1, first_call_s=0.511,
                               n_samples=689, measured_threads=2, **{"ops": 1, **extra}))
    result = VariantsResult("seed:ex3-float", ["32x1000"], [r.variant for r in rows], [32], [None], rows)
    text = _render(lambda c: render_variants(result, c))
    _fits(text)
    for name in ("compile-max-autotune", "int8-dynamic", "no-op", "speed-up [CI]"):
        assert name in text
    wide = _render(lambda c: render_variants(result, c), width=400)
    assert "eager (paired)" in wide and "peak mem" in wide
def test_study_tables_leave_out_optional_and_empty_columns_on_a_narrow_terminal():
    import io

    from rich.console import Console

    from flopgap.report.html import Section, Table
    from flopgap.report.study_view import print_sections

    rows = [["torchvision:shufflenet_v2_x0_5", "1.37 M", "84.6 M", "35.6 MB", "4.11 ms [4.04 ms, 4.17 ms] n=20", ""]]
    table = Table(["model", "params", "FLOPs", "bytes", "measured", "explain"], rows, "models", "models",
                  optional=(3, 1))

    def shown(width):
        buf = io.StringIO()
        print_sections([Section("zoo", [table])], Console(file=buf, width=width, color_system=None))
        return buf.getvalue()

    narrow, wide = shown(60), shown(300)
    assert "35.6 MB" not in narrow and "(not shown at this width: bytes" in narrow and "4.11 ms" in narrow
    assert "35.6 MB" in wide and "1.37 M" in wide and "not shown" not in wide
    assert "explain" not in wide   # a column with nothing in it is not printed
