"""Per-command HTML pages people read, end to end through the CLI, parsed back: units,
sizes, th scope, collapsed remainders, plots; report RUN rebuilds the same page (plot
included); --csv is a folder of tables on every command; runs lists model names and
record counts that agree with what was stored."""

from __future__ import annotations

import csv
import os
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import FLOPGAP
from flopgap.machine import MachineProfile

_RAW_FLOAT = re.compile(r"\d\.\d{8,}")  # 0.015368067000053998: a raw float in a cell is a dump, not a report
_UNIT = re.compile(r"\d\s?(ns|us|ms|s|B|kB|MB|GB|FLOP|kFLOP|MFLOP|GFLOP|FLOP/s|GFLOP/s|%|x)\b")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells: list[str] = []
        self.th_scopes: list[str | None] = []
        self.tags: dict[str, int] = {}
        self._cell: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "th":
            self.th_scopes.append(dict(attrs).get("scope"))
        if tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _page(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text())
    assert p.th_scopes and all(s in ("col", "row") for s in p.th_scopes)  # every header says what it heads
    return p


def _readable(p: _Page, *, skip: set[str] = frozenset()) -> None:
    """No raw float in a cell (machine metadata aside), and units next to numbers."""
    raw = [c for c in p.cells if _RAW_FLOAT.search(c) and c not in skip]
    assert not raw, raw[:5]
    assert sum(bool(_UNIT.search(c)) for c in p.cells) >= 5


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("FLOPGAP_CACHE_DIR")
    os.environ["FLOPGAP_CACHE_DIR"] = str(cache)
    try:
        MachineProfile.synthetic(quick=True).save()
    finally:
        if old is None:
            os.environ.pop("FLOPGAP_CACHE_DIR")
        else:
            os.environ["FLOPGAP_CACHE_DIR"] = old
    return {**os.environ, "FLOPGAP_CACHE_DIR": str(cache)}


def run(env, *args, cwd=None):
    p = subprocess.run([FLOPGAP, *args], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)
    assert p.returncode == 0, p.stderr
    return p


def _machine_cells(p: _Page) -> set[str]:
    return set(p.cells)  # the machine table (load averages, versions) may hold raw numbers


@pytest.mark.slow
def test_explain_page_top_n_roofline_size_and_report_rebuilds_it(env, tmp_path):
    db = tmp_path / "r.db"
    page = tmp_path / "explain.html"
    run(env, "explain", "torchvision:mobilenet_v3_small", "--quick-machine", "--no-measure", "--calls", "3",
        "--html", str(page), "--db", str(db))
    size = page.stat().st_size
    assert size < 250_000, size  # the whole dump was 403 kB
    p = _page(page)
    assert p.tags.get("img") == 1 and p.tags.get("details", 0) >= 1  # the roofline; the rest collapsed
    assert p.tags["td"] < 2500
    text = page.read_text()
    assert "ops by measured time" in text and "more ops (less time)" in text
    _readable(p, skip=_metadata_cells(text))
    # report RUN (-o, --html: the same option) rebuilds the page from the store, plot included
    for flag in ("-o", "--html"):
        again = tmp_path / f"report{flag}.html"
        run(env, "report", "latest", "--db", str(db), flag, str(again))
        q = _page(again)
        assert q.tags.get("img") == 1 and q.tags.get("details", 0) >= 1
        assert abs(again.stat().st_size - size) < 0.1 * size


def _metadata_cells(text: str) -> set[str]:
    """Cells of the machine table (versions, load averages are not measurements)."""
    part = text.split("<h2>Machine</h2>", 1)
    if len(part) < 2:
        return set()
    p = _Page()
    p.feed(part[1])
    return set(p.cells)


def test_time_page_has_units_and_a_sample_histogram(env, tmp_path):
    page = tmp_path / "time.html"
    run(env, "time", "seed:ex2-deep", "--max-time", "0.3", "--html", str(page), "--csv", str(tmp_path / "t"))
    p = _page(page)
    text = page.read_text()
    assert p.tags.get("img") == 1 and "steady-state samples" in text
    assert "median latency" in p.cells and any(re.search(r"\d us \[", c) for c in p.cells)
    assert "0.0" not in [c[:3] for c in p.cells if c and c[0].isdigit() and "." in c and len(c) > 12]
    _readable(p, skip=_metadata_cells(text))
    assert (tmp_path / "t" / "measurement.csv").exists()


def test_time_vs_page_compares_side_by_side(env, tmp_path):
    page = tmp_path / "vs.html"
    run(env, "time", "seed:ex2-deep", "--vs", "seed:ex2-wide", "--max-time", "0.3", "--html", str(page))
    p = _page(page)
    assert "seed:ex2-deep / seed:ex2-wide" in page.read_text() and p.tags.get("img") == 1
    assert "seed:ex2-deep" in p.cells and "seed:ex2-wide" in p.cells


@pytest.mark.slow
def test_variants_page_has_a_speedup_chart(env, tmp_path):
    page = tmp_path / "v.html"
    run(env, "variants", "seed:ex3-float", "--try", "eager,int8-legacy", "--max-time", "0.3", "--html", str(page))
    p = _page(page)
    text = page.read_text()
    assert p.tags.get("img") == 1 and "speed-up of each variant over eager" in text
    assert any(re.fullmatch(r"[\d.]+x \[[\d.]+, [\d.]+\]", c) for c in p.cells)
    _readable(p, skip=_metadata_cells(text))


@pytest.mark.slow
def test_predict_and_count_pages(env, tmp_path):
    page = tmp_path / "p.html"
    run(env, "predict", "torchvision:resnet18", "--quick-machine", "--html", str(page))
    p = _page(page)
    assert "predicted latency (model never timed)" in p.cells and p.tags.get("details", 0) >= 1
    _readable(p, skip=_metadata_cells(page.read_text()))
    page = tmp_path / "c.html"
    run(env, "count", "torchvision:resnet18", "--backward", "--html", str(page))
    p = _page(page)
    assert "backward pass" in page.read_text() and any(c.endswith("GFLOP") for c in p.cells)


@pytest.mark.slow  # several CLI processes end to end: the slow tier (make test-slow, CI)
def test_csv_is_a_folder_of_tables_on_every_command(env, tmp_path):
    out = tmp_path / "count"
    run(env, "count", "seed:ex2-wide", "--backward", "--csv", str(out))
    ops = list(csv.DictReader((out / "ops.csv").open()))
    assert {r["phase"] for r in ops} == {"forward", "backward"}
    assert sorted(int(r["macs"]) for r in ops if r["op"] == "aten.addmm.default") == [100 * 500, 500 * 100]
    assert (out / "modules.csv").exists() and (out / "count_summary.csv").exists()
    assert not (out / "ops_rest.csv").exists()  # a collapsed remainder is part of ops.csv
    for cmd in ("count", "time", "explain", "predict", "variants", "compare", "report"):
        h = subprocess.run([FLOPGAP, cmd, "--help"], capture_output=True, text=True, env={**env, "COLUMNS": "300"})
        assert "into this folder, one NAME.csv each" in " ".join(h.stdout.split()), cmd
    for cmd in ("study", ):
        h = subprocess.run([FLOPGAP, cmd, "zoo", "--help"], capture_output=True, text=True, env={**env, "COLUMNS": "300"})
        assert "into this folder, one NAME.csv each" in " ".join(h.stdout.split())


@pytest.mark.slow  # several CLI processes end to end: the slow tier (make test-slow, CI)
def test_runs_lists_model_names_and_counts_that_agree(env, tmp_path):
    db = tmp_path / "r.db"
    run(env, "count", "seed:ex2-deep", "--db", str(db))
    p = run(env, "runs", "--db", str(db), "--json", "-")
    import json

    (r,) = json.loads(p.stdout)
    assert (r["kind"], r["name"], r["models"], r["measurements"]) == ("count", "seed:ex2-deep", 1, 1)
    table = run(env, "runs", "--db", str(db)).stdout
    assert "seed:ex2-deep" in table and "records" in table
    for line in table.splitlines():  # piped: 100 columns, every row closed
        assert len(line) <= 100 and (not line.startswith("│") or line.rstrip().endswith("│")), line
