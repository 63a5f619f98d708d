"""A pytest plugin (entry point ``pytest11``): latency budgets and regression gates with
flopgap's rigorous timer, inside ordinary tests.

The fixture ``flopgap_latency`` times a callable and judges it::

    def test_resnet18_latency(flopgap_latency):
        model, x = ...
        m = flopgap_latency(model, (x,), max_ms=40)   # a flopgap.timing.Measurement

Decisions are taken on the 95% CI, never on a bare median:

- **budget** (``max_ms``): the test fails when the CI of the median lies wholly above
  the budget; wholly below it passes; a CI that straddles the budget passes and is
  reported as inconclusive;
- **regression** (``--flopgap-compare FILE``, a baseline written by ``--flopgap-save``):
  the ratio current / baseline and its CI come from ``flopgap compare``'s rule
  (:func:`flopgap.study.compare.compare_sources`: a bootstrap of the ratio of medians
  over both sides' samples, resampled independently); the test fails when that CI lies
  wholly above ``1 + threshold`` (``--flopgap-threshold``, default 5%); wholly below
  ``1 / (1 + threshold)`` is reported as an improvement;
- a **disturbed** measurement (the timer's sentinel saw the machine interfere,
  ``Measurement.disturbed``), or a baseline ``flopgap compare`` would refuse (another
  machine, torch version, thread count, inputs or precision target), never fails a
  test: the terminal summary says it was not judged, and why.

``@pytest.mark.flopgap(max_ms=..., threshold=..., name=...)`` sets defaults for the
fixture calls of one test. ``--flopgap-save DIR|FILE`` writes every measurement of the
test run (a ``.json`` path, or ``DIR/flopgap-latency.json``) as the next baseline: the
timer's own ``flopgap.time/1`` records, named by test, so ``flopgap compare OLD NEW``
reads two such files too. Timer options default to ``--flopgap-max-time`` (2 s) and
``--flopgap-precision`` (2%); any :class:`flopgap.timing.TimerOptions` field may be
passed to the call (or ``options=TimerOptions(...)``), and ``clock``/``load`` reach
:func:`flopgap.timing.measure` (tests pass fakes).

The plugin module imports nothing heavy (torch, numpy) until a test uses the fixture, so
it costs nothing to other projects' test runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

__all__ = ["LatencyRecord", "LatencyGate", "PLUGIN_SCHEMA"]

PLUGIN_SCHEMA = "flopgap.pytest/1"
_DEFAULT_FILE = "flopgap-latency.json"
_DEFAULT_THRESHOLD = 0.05  # a regression must exceed 5% beyond the CI: smaller shifts are machine drift


@dataclass
class LatencyRecord:
    """One fixture call: what was timed, the figures, and the verdicts."""

    key: str
    median_s: float
    ci_low_s: float
    ci_high_s: float
    n_samples: int
    threads: int
    device: str
    disturbed: bool
    warnings: list[str]
    max_ms: float | None = None
    budget: str = ""            # within | over | inconclusive | not judged (disturbed)
    baseline: dict | None = None
    ratio: tuple[float, float, float] | None = None
    change: str = ""            # regression | improvement | no change | not judged: ...
    environment: dict = field(default_factory=dict)
    measurement: dict = field(default_factory=dict)  # the timer's flopgap.time/1 record, named by ``key``

    def to_dict(self) -> dict:
        return {**self.measurement, "max_ms": self.max_ms, "budget": self.budget or None}


def _ms(s: float) -> str:
    return f"{s * 1e3:.4g} ms"


class LatencyGate:
    """The state of one test run: the baseline read, the records taken, the options."""

    def __init__(self, config: pytest.Config):
        opt = config.getoption
        self.save = opt("flopgap_save")
        self.compare_path = opt("flopgap_compare")
        self.threshold = float(opt("flopgap_threshold"))
        self.max_time = float(opt("flopgap_max_time"))
        self.precision = float(opt("flopgap_precision"))
        if not self.threshold >= 0:
            raise pytest.UsageError(f"--flopgap-threshold must be >= 0, got {self.threshold}")
        if not self.max_time > 0 or not 0 < self.precision < 1:
            raise pytest.UsageError("--flopgap-max-time must be > 0 and --flopgap-precision in (0, 1)")
        self.records: list[LatencyRecord] = []
        self.baseline: dict = {}
        self.baseline_env: dict = {}
        if self.compare_path:
            self._read_baseline(Path(self.compare_path))

    def _read_baseline(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise pytest.UsageError(f"--flopgap-compare: cannot read {str(path)!r}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise pytest.UsageError(f"--flopgap-compare: {str(path)!r} is not JSON ({e.msg})") from None
        if not isinstance(data, dict) or data.get("schema") != PLUGIN_SCHEMA:
            got = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise pytest.UsageError(f"--flopgap-compare: {str(path)!r} is not a {PLUGIN_SCHEMA} baseline "
                                    f"(schema {got!r}); write one with --flopgap-save")
        self.baseline = data.get("results", {})
        self.baseline_env = data.get("environment", {})

    # ------------------------------------------------------------------ judging
    def judge(self, rec: LatencyRecord, threshold: float) -> list[str]:
        """Fill the record's verdicts; return the reasons to fail the test (none when disturbed)."""
        fails = []
        if rec.max_ms is not None:
            budget = rec.max_ms / 1e3
            if rec.disturbed:
                rec.budget = "not judged (disturbed)"
            elif not math.isfinite(rec.ci_low_s):
                rec.budget = "inconclusive (no CI)"
            elif rec.ci_low_s > budget:
                rec.budget = "over"
                fails.append(f"{rec.key}: latency {_ms(rec.median_s)} (95% CI {_ms(rec.ci_low_s)} .. "
                             f"{_ms(rec.ci_high_s)}) is over the budget of {rec.max_ms:g} ms")
            elif rec.ci_high_s <= budget:
                rec.budget = "within"
            else:
                rec.budget = "inconclusive"
        base = self.baseline.get(rec.key)
        if self.compare_path and base is None:
            rec.change = "not judged: not in the baseline"
        elif base is not None:
            rec.baseline = base
            fails += self._against_baseline(rec, base, threshold)
        return fails

    def _against_baseline(self, rec: LatencyRecord, base: dict, threshold: float) -> list[str]:
        """``flopgap compare``'s ratio, CI, refusals and flag for one baseline entry."""
        from flopgap.errors import UsageError
        from flopgap.study.compare import Source, compare_sources

        a, b = _timed(rec.key, base), _timed(rec.key, rec.measurement)
        try:
            cmp = compare_sources(Source("the baseline", "pytest", self.baseline_env, (a,)),
                                  Source("this run", "pytest", rec.environment, (b,)), threshold=threshold)
        except UsageError as e:  # what compare refuses (other machine, threads ...) is reported, never failed
            rec.change = f"not judged: {e}"
            return []
        row = cmp.rows[0]
        rec.ratio = (row.ratio, row.ci_low, row.ci_high)
        if row.flag.startswith("inconclusive"):
            rec.change = "not judged: " + ("disturbed" if b.disturbed else "the baseline was disturbed")
        elif not math.isfinite(row.ci_low):
            rec.change = "not judged: no CI"
        else:
            rec.change = row.flag
        if rec.change == "regression":
            return [f"{rec.key}: {row.ratio:.3f}x the baseline (95% CI {row.ci_low:.3f} .. {row.ci_high:.3f}), "
                    f"beyond the {threshold:.0%} threshold: {_ms(a.median)} -> {_ms(b.median)}"]
        return []

    # ------------------------------------------------------------------ output
    def write(self) -> Path | None:
        if not self.save or not self.records:
            return None
        from flopgap._json import dumps

        p = Path(self.save)
        p = p if p.suffix == ".json" else p / _DEFAULT_FILE
        env = self.records[0].environment
        data = {"schema": PLUGIN_SCHEMA, "environment": env,
                "conventions": {"latency": "median seconds per call of flopgap.timing.measure, 95% CI of the median "
                                           "(order statistics)"},
                "results": {r.key: r.to_dict() for r in self.records}}
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(dumps(data) + "\n")
        except OSError as e:
            raise pytest.UsageError(f"--flopgap-save: cannot write {str(p)!r}: {e.strerror}") from None
        return p

    def summary_lines(self) -> list[str]:
        from flopgap._units import fmt_latency

        out = []
        for r in self.records:
            line = f"{r.key}: " + fmt_latency(r.median_s, r.ci_low_s, r.ci_high_s, r.n_samples, r.threads, r.device)
            if r.max_ms is not None:
                line += f"; budget {r.max_ms:g} ms: {r.budget}"
            if r.ratio is not None:
                ratio, lo, hi = r.ratio
                ci = f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else ""
                line += f"; vs baseline {ratio:.3f}x{ci}: {r.change}"
            elif r.change:
                line += f"; {r.change}"
            if r.disturbed:
                line = "DISTURBED " + line
            if r.warnings:
                line += f"; {len(r.warnings)} warning(s): " + " | ".join(r.warnings)
            out.append(line)
        return out


def _timed(key: str, d: dict):
    """A stored measurement record as one side of ``flopgap compare``."""
    from flopgap.study.compare import Timed

    spec = d.get("spec") or {}
    samples = d.get("samples") or None
    return Timed(key, None, float(d["median"]), d.get("ci_low"), d.get("ci_high"), d.get("n_samples"),
                 spec.get("threads"), tuple(spec.get("inputs") or ()), spec.get("device") or "cpu",
                 spec.get("precision"), bool(d.get("disturbed")), tuple(samples) if samples else None)


_GATE = pytest.StashKey[LatencyGate]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flopgap", "flopgap latency gates")
    group.addoption("--flopgap-save", metavar="DIR|FILE", default=None,
                    help="write this test run's latencies as a baseline (a .json path, or DIR/flopgap-latency.json)")
    group.addoption("--flopgap-compare", metavar="FILE", default=None,
                    help="fail tests whose latency regressed against this baseline (CI of the ratio wholly beyond "
                         "--flopgap-threshold); disturbed measurements are reported, never failed")
    group.addoption("--flopgap-threshold", type=float, default=_DEFAULT_THRESHOLD,
                    help="regression threshold as a fraction (default 0.05: the ratio's CI must lie above 1.05)")
    group.addoption("--flopgap-max-time", type=float, default=2.0, help="seconds of timing per measurement")
    group.addoption("--flopgap-precision", type=float, default=0.02,
                    help="stop timing once the 95%% CI of the median is within this fraction of it")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "flopgap(max_ms=None, threshold=None, name=None): defaults for the "
                                       "flopgap_latency fixture in this test")
    config.stash[_GATE] = LatencyGate(config)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    gate = config.stash.get(_GATE, None)
    if gate is None or not gate.records:
        return
    terminalreporter.section("flopgap latency")
    for line in gate.summary_lines():
        terminalreporter.write_line(line, yellow=line.startswith("DISTURBED"))
    path = gate.write()
    if path is not None:
        terminalreporter.write_line(f"flopgap: wrote baseline {path} ({len(gate.records)} measurement(s))")


def _time(fn: Callable, inputs, options, name: str, clock, load):
    """The one call into the timer."""
    from flopgap.timing import measure

    return measure(fn, inputs, options, name=name, clock=clock, load=load)


@pytest.fixture
def flopgap_latency(request: pytest.FixtureRequest):
    """``flopgap_latency(fn, inputs=(), *, max_ms=None, name=None, threshold=None, options=None,
    clock=None, load=None, **timer_options)``: time ``fn(*inputs)`` with
    :func:`flopgap.timing.measure`, judge it against the budget and the baseline, and
    return the Measurement. ``flopgap_latency.check(m, ...)`` judges a Measurement timed
    elsewhere."""
    gate: LatencyGate = request.config.stash[_GATE]
    marker = request.node.get_closest_marker("flopgap")
    defaults = dict(marker.kwargs) if marker else {}
    calls: list[str] = []

    def _key(name: str | None) -> str:
        base = name or defaults.get("name") or request.node.nodeid
        key = base if base not in calls else f"{base}#{calls.count(base) + 1}"
        calls.append(base)
        return key

    def _check(m, key: str, max_ms: float | None, threshold: float | None):
        max_ms = defaults.get("max_ms") if max_ms is None else max_ms
        threshold = defaults.get("threshold", gate.threshold) if threshold is None else threshold
        record = m.to_dict()
        record["spec"] = {**record["spec"], "name": key}
        rec = LatencyRecord(key, m.median, m.ci_low, m.ci_high, len(m.samples), m.spec.threads, m.spec.device,
                            bool(m.disturbed), list(m.warnings), max_ms, environment=m.environment,
                            measurement=record)
        fails = gate.judge(rec, threshold)
        gate.records.append(rec)
        if fails:
            pytest.fail("; ".join(fails), pytrace=False)
        return m

    def check(m, *, max_ms: float | None = None, name: str | None = None, threshold: float | None = None):
        return _check(m, _key(name), max_ms, threshold)

    def time_it(fn: Callable, inputs: Any = (), *, max_ms: float | None = None, name: str | None = None,
                threshold: float | None = None, options=None, clock=None, load=None, **timer_options):
        from flopgap.timing import TimerOptions

        if options is None:
            options = TimerOptions(**{"max_time": gate.max_time, "precision": gate.precision, **timer_options})
        elif timer_options:
            options = options.replace(**timer_options)
        key = _key(name)
        return _check(_time(fn, inputs, options, key, clock, load), key, max_ms, threshold)

    time_it.check = check
    return time_it
