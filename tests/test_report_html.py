"""HTML reports: self-contained, tables and verdicts present, every name escaped, CSV export."""

from __future__ import annotations

import base64
import csv
import io
import re

import pytest

from flopgap.report.html import Plot, Para, Section, Table, render_html, table_csv, write_csv, write_html
from flopgap.report.study_view import sections_for, title_for
from flopgap.store import Store
from flopgap.study import run_seed, run_zoo

HOSTILE = "<script>alert(1)</script>"


def _payload(flops, lat, finding=""):
    return {"count": {"params": flops // 2, "flops": flops, "bytes_read": flops, "bytes_written": 10, "ops": 7},
            "median": lat, "ci_low": lat * 0.99, "ci_high": lat * 1.01, "prediction": {"latency_s": lat * 2},
            "finding": finding, "batch": 1}


@pytest.fixture
def zoo(tmp_path):
    fake = {HOSTILE: (1000, 5e-3), "seed:ex2-wide": (200_000, 1e-4), "seed:ex1-large": (2_000_000, 2e-4),
            "seed:ex1-small": (40_000, 4e-5)}
    store = Store(str(tmp_path / "h.db"))
    r = run_zoo(store=store, models=list(fake), machine={"cpu_model": "Fake <b>CPU</b>"},
                measure=lambda it: _payload(*fake[it.model], finding=f"{HOSTILE} dispatch-bound"), n_boot=100)
    yield r
    store.close()


def test_zoo_report_has_tables_plots_and_escapes_hostile_names(zoo, tmp_path):
    path = write_html(tmp_path / "r" / "zoo.html", title_for(zoo), sections_for(zoo), machine=zoo.run.machine)
    text = path.read_text()
    assert "<script>" not in text and HTML_ESCAPED in text
    assert "<b>CPU</b>" not in text and "Fake &lt;b&gt;CPU&lt;/b&gt;" in text
    # the correlation table and the model table, with their cells
    assert "<th scope=\"col\">Spearman rho [95% CI]</th>" in text
    assert re.search(r"<td>FLOPs</td><td class=\"num\">4</td>", text)
    assert f"<td>{HTML_ESCAPED}</td>" in text
    assert "top inversions" in text  # the hostile model has the fewest FLOPs and is the slowest
    # self-contained: plots inline, nothing fetched from the network
    assert text.count("data:image/png;base64,") == 4
    assert not re.search(r"""(src|href)=["'](https?:)?//""", text)
    png = base64.b64decode(re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text).group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


HTML_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_seed_report_has_the_verdict_table(tmp_path):
    from test_study_seed import fake_model, fake_pair

    store = Store(str(tmp_path / "s.db"))
    r = run_seed(store=store, machine={"cpu_model": "fake"}, measure_model=fake_model, measure_pair=fake_pair)
    text = write_html(tmp_path / "seed.html", title_for(r), sections_for(r), machine=r.run.machine).read_text()
    for col in ("claim", "metric", "measured [95% CI]", "verdict", "explain&#x27;s reason"):
        assert f"<th scope=\"col\">{col}</th>" in text
    assert '<td class="does-not-hold">does not hold</td>' in text
    assert '<td class="holds">holds</td>' in text
    assert "<td>3.2 [3, 3.4]</td>" in text
    assert "<td>why seed:ex2-deep</td>" in text


def test_render_escapes_every_string():
    sections = [Section(HOSTILE, [Para(HOSTILE, "warn"), Table([HOSTILE], [[HOSTILE]], HOSTILE, "t"),
                                  Plot(b"\x89PNG", HOSTILE)])]
    text = render_html(HOSTILE, sections, machine={HOSTILE: HOSTILE}, subtitle=HOSTILE)
    assert "<script>" not in text
    assert text.count(HTML_ESCAPED) >= 9


def test_csv_export(tmp_path):
    t = Table(["model", "latency"], [[HOSTILE, "1 ms"], ["a,b", None]], "cap", "models")
    rows = list(csv.reader(io.StringIO(table_csv(t))))
    assert rows == [["model", "latency"], [HOSTILE, "1 ms"], ["a,b", ""]]
    paths = write_csv(tmp_path / "csv", [Section("s", [t, Table(["x"], [[1]], "", "models")])])
    assert [p.name for p in paths] == ["models.csv", "models_2.csv"]
    assert paths[0].read_text() == table_csv(t)
    html = render_html("t", [Section("s", [t])])
    link = re.search(r'download="models.csv" href="data:text/csv;base64,([^"]+)"', html)
    assert base64.b64decode(link.group(1)).decode() == table_csv(t)
