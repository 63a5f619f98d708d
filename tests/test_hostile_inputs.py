"""Hostile input through the CLI: every case ends in exit 0 with a correct result, or
exit 2 (130 for Ctrl-C) with exactly one ``error:`` line; never "internal error", never
a traceback, never a payload run, never markup or a control character acted on.

Most cases run the CLI in this process (``flopgap.cli.main``, the same code the console
script runs) so that a corpus of hundreds stays fast; the cases that depend on a real
process (signals, what reaches a terminal, the console script itself) run it as a
subprocess. docs/security.md lists which test keeps which promise.
"""

from __future__ import annotations

import decimal
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from flopgap.machine import MachineProfile, fingerprint
from flopgap.machine._profile import cache_path
from flopgap.models import InputSpec, make_inputs, parse_input_spec
from flopgap.errors import UsageError

FLOPGAP = str(Path(sys.executable).with_name("flopgap"))

# names a model may give its modules and classes, each aimed at the terminal or a report
HOSTILE_NAMES = [
    "[/]",
    "[bold red]RED[/bold red]",
    "[link=http://evil]click[/link]",
    "\x1b[31mANSI\x1b[0m",
    "over\rwrite\x08",
    "\u202eevil",
    "=HYPERLINK(\"http://x\")",
    "<script>alert(1)</script>",
]

FACTORIES = '''
import os, sys, time
import torch
from torch import nn

NAMES = {names!r}


class Any(nn.Module):
    """Takes any tensor: a count always has one op."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, *xs):
        return sum(x.float().sum() for x in xs) * self.w


def any_input():
    return Any()


def named(i=0):
    name = NAMES[int(i)]
    cls = type(name, (nn.Linear,), {{}})
    m = nn.Sequential()
    m.add_module(name, cls(4, 4))
    m.example_inputs = ("1x4",)
    return m


class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.environ["FLOPGAP_TEST_MARKER"],))


def all_named():
    m = nn.Sequential()
    for name in NAMES:
        m.add_module(name, type(name, (nn.Linear,), {{}})(4, 4))
    return m


def five():
    m = Any(); m.example_inputs = 5; return m

def bad_string():
    m = Any(); m.example_inputs = ("1x0",); return m

def complex_input():
    m = Any(); m.example_inputs = (torch.zeros(2, dtype=torch.complex64),); return m

def raising_property():
    class M(Any):
        @property
        def example_inputs(self):
            raise RuntimeError("no inputs today")
    return M()

class Boom(BaseException):
    pass

def base_exception():
    raise Boom("boom")

def exits():
    sys.exit(3)

def raises_markup():
    raise RuntimeError("[/] \\x1b[2J cleared")

def not_a_module():
    return 5

def interrupted():
    raise KeyboardInterrupt

class Later(nn.Module):
    def __init__(self):
        super().__init__(); self.n = 0; self.l = nn.Linear(2, 2)
    def forward(self, x):
        self.n += 1
        if self.n > 3:
            raise RuntimeError("broken after 3 calls")
        return self.l(x)

def later():
    return Later()

class BaseLater(Later):
    def forward(self, x):
        raise Boom("a BaseException from forward")

def base_forward():
    return BaseLater()

def slow():
    open(os.environ["FLOPGAP_TEST_STARTED"], "w").close()
    time.sleep(60)
    return Any()
'''


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder holding the hostile factories (importable as ``hostile_models``), a
    synthetic machine profile in its cache, and a marker path no payload may create."""
    d = tmp_path_factory.mktemp("hostile")
    (d / "hostile_models.py").write_text(FACTORIES.format(names=HOSTILE_NAMES))
    # explain uses it: no minute of measuring in a test
    MachineProfile.synthetic(quick=True).save(d / "cache" / cache_path(fingerprint(), True).name)
    return d


@pytest.fixture
def cli(workdir, capsys, monkeypatch):
    """``cli(*args) -> (exit code, stdout, stderr)``: the CLI in this process, in the
    work folder, with every invariant of a hostile case checked."""
    from flopgap.cli import main

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("FLOPGAP_CACHE_DIR", str(workdir / "cache"))
    monkeypatch.setenv("FLOPGAP_TEST_MARKER", str(workdir / "PAYLOAD_RAN"))
    monkeypatch.delenv("FLOPGAP_DEBUG", raising=False)

    def run(*args, codes=(0, 2)):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out = capsys.readouterr()
        rc = exc.value.code
        check(rc, out.out, out.err, codes, args)
        return rc, out.out, out.err

    yield run
    assert not (workdir / "PAYLOAD_RAN").exists(), "a payload ran"


def check(rc, out: str, err: str, codes, args=()) -> None:
    """The promises every hostile case keeps."""
    assert rc in codes, (args, rc, err[-500:])
    assert "Traceback" not in err and "internal error" not in err, (args, err[-500:])
    data = "--csv" in args and "-" in args   # CSV to a pipe is data, kept exact (a terminal gets escapes)
    assert "\x1b" not in (err if data else out + err), (args, "a raw escape sequence reached the terminal")
    lines = err.splitlines()
    if rc == 130:  # Ctrl-C: what was kept may be reported above; the last line says it was interrupted
        assert lines and "interrupted" in lines[-1], (args, err[-800:])
    elif rc != 0:
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err[-800:])


# ----------------------------------------------------------------------------- input specs
# The spec parser: any text is a spec whose printed form reads back equal, or one
# UsageError; integer bounds are kept exactly; generated values are finite and in range.

@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_round_tripping_spec_or_a_usage_error(text):
    try:
        spec = parse_input_spec(text)
    except UsageError as e:
        assert "\n" not in str(e)
        return
    assert parse_input_spec(str(spec)) == spec


_DTYPES = ["", ":float32", ":float16", ":bfloat16", ":float64", ":int64", ":int32", ":int16", ":int8", ":uint8",
           ":bool"]
_numbers = st.one_of(
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e308", "-1e308", "1e999", "9007199254740993", "-9223372036854775809",
                     "9223372036854775807", "65504", "65520", "1e-10", "0.5", "1e3", "9" * 400]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=3), st.sampled_from(_DTYPES),
       st.one_of(st.none(), st.tuples(_numbers, _numbers)))
def test_structured_specs_are_exact_finite_and_round_trip(dims, dtype, bounds):
    text = "x".join(map(str, dims)) + dtype + (f"[{bounds[0]},{bounds[1]})" if bounds else "")
    try:
        spec = parse_input_spec(text)
    except UsageError:
        return
    assert parse_input_spec(str(spec)) == spec
    (t,) = make_inputs((spec,))
    assert tuple(t.shape) == tuple(dims)
    if spec.low is None:
        return
    if t.dtype.is_floating_point:
        assert torch.isfinite(t).all()
        assert (t >= spec.low).all() and (t < spec.high).all()
    else:  # integers: the bounds as typed, not as a float rounded them
        assert (spec.low, spec.high) == (int(decimal.Decimal(bounds[0])), int(decimal.Decimal(bounds[1])))
        assert (t >= spec.low).all() and (t < spec.high).all()


def test_integer_bounds_are_exact_and_ranges_within_the_dtype():
    assert parse_input_spec("1x2:int64[0,9007199254740993)").high == 9007199254740993
    for bad in ("1x2:int64[-9223372036854775809,0)", "1x2:float32[-1e308,1e308)", "1x2[0,1e999)",
                "1x2:uint8[0,257)", "2:float16[0,70000)", "2:float16[0,1e-10)", "1x2:int8[0,0.5)"):
        with pytest.raises(UsageError):
            parse_input_spec(bad)
    spec = parse_input_spec("3:float64[-1.7e308,1.7e308)")
    assert torch.isfinite(make_inputs((spec,))[0]).all()
    assert str(InputSpec((2,), "float32", 0.1, 0.3)) == "2:float32[0.1,0.3)"


_DIMS = ["1x4", "0", "-1", "1x" + "9" * 25, "x".join(["2"] * 70), "1x33333333333333333333", "1x" + "9" * 5000,
         "99999999999", "1x00000000000000000000004"]
_RANGES = ["", "[0,1)", "[-1e308,1e308)", "[0,1e999)", "[0,inf)", "[nan,1)", "[0,9007199254740993)",
           "[-9223372036854775809,0)", "[1,1)", "[5,2)", "[0,256)", "[0,257)", "[a,b)", "[0.5,1.5)"]
_SPEC_DTYPES = ["", ":float16", ":int64", ":uint8", ":bool", ":complex64", ":float99"]
# every dimension and range once each, the dtypes in turn: a corpus that stays seconds long
CORPUS_SPECS = [d + _SPEC_DTYPES[(i + j) % len(_SPEC_DTYPES)] + r
                for i, d in enumerate(_DIMS) for j, r in enumerate(_RANGES)]


@pytest.mark.parametrize("meta", [False, True], ids=["real", "meta"])
def test_input_spec_corpus_through_count(cli, meta):
    for spec in CORPUS_SPECS:
        rc, out, err = cli("count", "hostile_models:any_input", "-i", spec, "--json", "-", *(["--meta"] if meta else []))
        if rc == 0:
            parsed = parse_input_spec(spec)   # accepted by the CLI: a valid spec ...
            assert json.loads(out)["inputs"] == ["x".join(map(str, parsed.shape)) + ":" + parsed.dtype]


@pytest.mark.parametrize("args", [
    ["count", "seed:ex2-wide", "--batch", "0"],
    ["count", "seed:ex2-wide", "--batch", "-1"],
    ["count", "seed:ex2-wide", "--batch", "99999999999"],
    ["count", "seed:ex2-wide", "--batch", "9" * 30, "--meta"],
    ["count", "seed:ex2-wide", "--batch", "9" * 5000],
    ["count", "seed:ex2-wide", "--top", "-1"],
    ["time", "seed:ex2-wide", "--max-time", "nan"],
    ["time", "seed:ex2-wide", "--max-time", "inf"],
    ["time", "seed:ex2-wide", "--max-time", "-1"],
    ["time", "seed:ex2-wide", "--precision", "2"],
    ["time", "seed:ex2-wide", "--threads", "0"],
    ["time", "seed:ex2-wide", "--processes", "0"],
    ["time", "seed:ex2-wide", "--processes", "2", "-i", "1x33333333333333333333"],
    ["time", "seed:ex2-wide", "--processes", "2", "--batch", "99999999999999999999999"],
    ["time", "seed:ex2-wide", "--processes", "2", "--kwargs", "[1]"],
    ["time", "seed:ex2-wide", "-i", "1x33333333333333333333"],
    ["explain", "seed:ex2-wide", "-i", "1x33333333333333333333"],
    ["explain", "seed:ex2-wide", "--max-time", "inf"],
    ["predict", "seed:ex2-wide", "--batch", "99999999999"],
    ["variants", "seed:ex2-wide", "--batch", "1,x"],
    ["variants", "seed:ex2-wide", "--batch", "99999999999999999999"],
    ["variants", "seed:ex2-wide", "--max-time", "nan"],
    ["variants", "seed:ex2-wide", "--try", "[/]"],
    ["study", "zoo", "--models", "seed:ex2-wide", "--max-time", "inf"],
    ["count", "seed:ex2-wide", "--no-such-option"],
    ["count"],
    ["runs", "--limit", "0"],
], ids=lambda a: " ".join(a)[:60])
def test_bad_options_are_one_line(cli, args):
    rc, _, _ = cli(*args)
    assert rc == 2


# ----------------------------------------------------------------------------- --kwargs
@pytest.mark.parametrize("spec, kwargs, expect", [
    ("torchvision:resnet18", '{"weights": "DEFAULT"}', "downloads nothing"),
    ("torchvision:resnet18", '{"weights": "ResNet18_Weights.IMAGENET1K_V1"}', "downloads nothing"),
    ("torchvision:resnet18", '{"pretrained": true}', "downloads nothing"),
    ("torchvision:resnet18", '{"num_classes": -5}', "negative dimension"),
    ("torchvision:resnet18", '{"num_classes": 100000000000}', "available"),
    ("torchvision:resnet18", '{"num_classes": "ten"}', "rejected --kwargs"),
    ("torchvision:resnet18", '{"num_classes": 1e999}', "rejected --kwargs"),
    ("torchvision:resnet18", '{"num_classes": NaN}', "rejected --kwargs"),
    ("torchvision:resnet18", '{"no_such_arg": 1}', "rejected --kwargs"),
    ("torchvision:resnet18", '{"n": ' + "[" * 50000 + "]" * 50000 + "}", "nests deeper"),
    ("torchvision:resnet18", '{"n": ' + "[" * 40 + "]" * 40 + "}", "nests deeper"),
    ("torchvision:resnet18", '{"num_classes": ' + "9" * 5000 + "}", "more digits"),
    ("torchvision:resnet18", '{"num_classes": ' + "9" * 4000 + "}", "rejected --kwargs"),
    ("torchvision:resnet18", "[1, 2]", "JSON object"),
    ("torchvision:resnet18", "{nope", "not valid JSON"),
    ("torchvision:vit_b_16", '{"image_size": 7}', "rejected --kwargs"),
    ("zoo:bert-tiny", '{"d_model": -1}', "rejected --kwargs"),
    ("zoo:bert-tiny", '{"heads": 0}', "rejected --kwargs"),
    ("seed:ex2-wide", '{"width": 3}', "takes no --kwargs"),
], ids=lambda v: str(v)[:40])
def test_bad_kwargs_are_one_line(cli, spec, kwargs, expect):
    rc, _, err = cli("count", spec, "--kwargs", kwargs)
    assert rc == 2 and expect in err


def test_nothing_is_downloaded_even_by_a_factory(cli, workdir):
    (workdir / "hub_factory.py").write_text(textwrap.dedent('''
        import torchvision
        def make():
            return torchvision.models.resnet18(weights="DEFAULT")
    '''))
    rc, _, err = cli("count", "hub_factory:make")
    assert rc == 2 and "tried to download https://" in err and "downloads nothing" in err


# ----------------------------------------------------------------------------- factories
@pytest.mark.parametrize("factory, expect", [
    ("five", "example_inputs must be"),
    ("bad_string", "every dimension must be"),
    ("complex_input", "cannot generate"),
    ("raising_property", "reading example_inputs failed"),
    ("base_exception", "Boom: boom"),
    ("exits", "SystemExit: 3"),
    ("raises_markup", "[/] \\x1b[2J cleared"),
    ("not_a_module", "not an nn.Module"),
    ("no_such_name", "no attribute"),
])
def test_factories_that_misbehave_are_one_line(cli, factory, expect):
    rc, _, err = cli("count", f"hostile_models:{factory}", "-i", "1x4")
    assert rc == 2 and expect in err


def test_a_factory_interrupting_itself_says_where(cli):
    rc, _, err = cli("count", "hostile_models:interrupted", "-i", "1x4", codes=(130,))
    assert "interrupted (Ctrl-C) while loading the model 'hostile_models:interrupted'" in err


@pytest.mark.parametrize("command", [["time", "--max-time", "0.2"], ["explain", "--quick-machine", "--no-measure"],
                                     ["explain", "--quick-machine", "--max-time", "0.2"],
                                     ["predict", "--quick-machine", "--measure", "--max-time", "0.2"]],
                         ids=lambda c: " ".join(c))
def test_a_forward_that_raises_after_three_calls_is_one_line(cli, command):
    rc, _, err = cli(command[0], "hostile_models:later", "-i", "1x2", *command[1:])
    assert rc == 2 and "broken after 3 calls" in err


def test_a_forward_raising_a_base_exception_is_one_line(cli):
    rc, _, err = cli("count", "hostile_models:base_forward", "-i", "1x2")
    assert rc == 2 and "Boom" in err


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize("i", range(len(HOSTILE_NAMES)), ids=[repr(n)[:24] for n in HOSTILE_NAMES])
def test_hostile_module_and_class_names_are_shown_literally(cli, workdir, i):
    name = HOSTILE_NAMES[i]
    shown = name.replace("\x1b", "\\x1b").replace("\r", "\\x0d").replace("\x08", "\\x08").replace("\u202e", "\\u202e")
    # --wide: every name whole, whatever width the terminal running the tests has
    rc, out, _ = cli("--wide", "count", "hostile_models:named", "--kwargs", json.dumps({"i": i}), "--depth", "3")
    assert rc == 0 and shown in out   # markup printed as text, control characters as escapes
    rc, out, _ = cli("--wide", "explain", "hostile_models:named", "--kwargs", json.dumps({"i": i}), "--quick-machine",
                     "--no-measure", "--calls", "3", "--depth", "3")
    assert rc == 0 and shown in out
    rc, out, _ = cli("count", "hostile_models:named", "--kwargs", json.dumps({"i": i}), "--csv", "-")
    assert rc == 0 and (name in out.replace('""', '"') or name.startswith(("=", "over")))
    if name.startswith("="):  # a spreadsheet would run it: kept as text
        assert f"'{name}" in out.replace('""', '"')
    html = workdir / f"names{i}.html"
    rc, _, _ = cli("count", "hostile_models:named", "--kwargs", json.dumps({"i": i}), "--html", html)
    assert rc == 0 and "<script>alert" not in html.read_text()


def test_markup_in_stored_names_is_shown_literally(cli, workdir):
    db = workdir / "names.db"
    cli("count", "hostile_models:named", "--kwargs", '{"i": 1}', "--db", db)
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET name = ?, kind = ?", ("[bold red]RED[/bold red]", "[/]\x1b[2J"))
    con.commit()
    con.close()
    rc, out, _ = cli("runs", "--db", db)
    assert rc == 0 and "[bold red]RED[/bold red]" in out and "[/]\\x1b[2J" in out


# ----------------------------------------------------------------------------- model files
def _exported(path: Path) -> Path:
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.l = nn.Linear(4, 3)

        def forward(self, x):
            return self.l(x).relu()

    torch.export.save(torch.export.export(M(), (torch.randn(2, 4),)), str(path))
    return path


def _rewrite(src: Path, dst: Path, change) -> Path:
    """A copy of the zip ``src`` where ``change(name, data)`` returns the new entries for each."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            for name, data in change(info.filename, zin.read(info.filename)):
                zout.writestr(name, data)
    return dst


def _adding(name: str, data: bytes):
    """A ``_rewrite`` change that keeps every entry and adds ``name`` once."""
    return lambda n, b: [(n, b)] + ([(name, data)] if n.endswith("/archive_version") else [])


def _payload_pickle() -> bytes:
    sys.path.insert(0, os.getcwd())
    try:
        from hostile_models import Evil
    finally:
        sys.path.pop(0)
    buf = io.BytesIO()
    torch.save(Evil(), buf)
    return buf.getvalue()


def _graph_calling_os_system(name: str, data: bytes):
    if not name.endswith("models/model.json"):
        return [(name, data)]
    m = json.loads(data)
    node = {"target": "torch.os.system", "inputs": [
        {"name": "command", "arg": {"as_string": "touch " + os.environ["FLOPGAP_TEST_MARKER"]}, "kind": 1}],
        "outputs": [], "metadata": {}, "is_hop_single_tensor_return": None, "name": "sys0"}
    m["graph_module"]["graph"]["nodes"].insert(0, node)
    return [(name, json.dumps(m).encode())]


def _model_files(d: Path) -> dict[str, Path]:
    good = _exported(d / "good.pt2")
    data = good.read_bytes()
    payload = _payload_pickle()
    files = {
        "good": good,
        "payload in sample inputs": _rewrite(good, d / "evil_inputs.pt2", lambda n, b: [
            (n, payload if n.endswith("data/sample_inputs/model.pt") else b)]),
        "payload as a pickled weight": _rewrite(good, d / "evil_weight.pt2", lambda n, b: [
            (n, payload if n.endswith("data/weights/weight_0") else
             b.replace(b'"use_pickle": false', b'"use_pickle": true', 1) if n.endswith("weights_config.json")
             else b)]),
        "payload as a pickled constant": _rewrite(good, d / "evil_constant.pt2", lambda n, b: [
            (n, b'{"config": {"c": {"path_name": "tensor_0", "is_param": false, "use_pickle": true, '
                b'"tensor_meta": null}}}' if n.endswith("constants_config.json") else b)]
            + ([(n.split("/")[0] + "/data/constants/tensor_0", payload)] if n.endswith("constants_config.json")
               else [])),
        "graph calling os.system": _rewrite(good, d / "evil_graph.pt2", _graph_calling_os_system),
        "path traversal": _rewrite(good, d / "traversal.pt2", _adding("../../escape.txt", b"x")),
        "absolute entry": _rewrite(good, d / "absolute.pt2", _adding("/etc/flopgap", b"x")),
        "aot native code": _rewrite(good, d / "aoti.pt2", _adding("good/data/aotinductor/model/model.so", b"\x7fELF")),
        "custom object": _rewrite(good, d / "custom.pt2", _adding("good/data/constants/custom_obj_0", payload)),
        "opaque object": _rewrite(good, d / "opaque.pt2", _adding("good/data/constants/opaque_obj_0", payload)),
        "missing program": _rewrite(good, d / "noprogram.pt2", lambda n, b: [] if n.endswith("model.json") else [(n, b)]),
        "broken json": _rewrite(good, d / "badjson.pt2", lambda n, b: [
            (n, b[:len(b) // 2] if n.endswith("model.json") else b)]),
        "deep json": _rewrite(good, d / "deepjson.pt2", lambda n, b: [
            (n, b"[" * 100000 + b"]" * 100000 if n.endswith("model.json") else b)]),
        "foreign version": _rewrite(good, d / "version.pt2", lambda n, b: [
            (n, b"99" if n.endswith("archive_version") else b)]),
        "empty": d / "empty.pt2",
        "text": d / "text.pt2",
        "empty zip": d / "emptyzip.pt2",
        "pickled module as .pt": d / "module.pt",
        "payload pickle as .pt": d / "payload.pt",
        "payload pickle as .pth": d / "payload.pth",
        "folder named .pt2": d / "folder.pt2",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("hello")
    zipfile.ZipFile(files["empty zip"], "w").close()
    torch.save(nn.Linear(2, 2), files["pickled module as .pt"])
    files["payload pickle as .pt"].write_bytes(payload)
    files["payload pickle as .pth"].write_bytes(payload)
    files["folder named .pt2"].mkdir()
    for cut in (10, 100, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        files[f"truncated at {cut}"] = d / f"cut{cut}.pt2"
        files[f"truncated at {cut}"].write_bytes(data[:cut])
    for k, pos in enumerate((len(data) // 5, len(data) // 2, 3 * len(data) // 4)):
        flipped = bytearray(data)
        flipped[pos:pos + 16] = bytes(b ^ 0xFF for b in flipped[pos:pos + 16])
        files[f"bytes flipped at {pos}"] = d / f"flip{k}.pt2"
        files[f"bytes flipped at {pos}"].write_bytes(bytes(flipped))
    return files


_DRIVER = """
import sys
from flopgap.cli import main
for i, args in enumerate(eval(sys.argv[1])):
    print(f"@@case {i}", file=sys.stderr, flush=True)
    try:
        main(args)
    except SystemExit as e:
        print(f"@@rc {e.code}", file=sys.stderr, flush=True)
"""


def test_model_file_corpus_in_one_real_process_runs_nothing_and_is_one_line(workdir, tmp_path, monkeypatch):
    """Damaged, foreign and malicious model files, each through the CLI, batched in one
    fresh process (torch's own logging goes to the real stderr
    there, so a traceback it printed would be seen)."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("FLOPGAP_TEST_MARKER", str(tmp_path / "PAYLOAD_RAN"))
    files = _model_files(tmp_path)
    cases = [(what, ["count", str(path), "-i", "2x4"]) for what, path in files.items()]
    cases += [(what, ["count", str(files[what])]) for what in ("good", "payload in sample inputs")]
    env = {**os.environ, "FLOPGAP_CACHE_DIR": str(workdir / "cache"), "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-c", _DRIVER, repr([args for _, args in cases])], capture_output=True,
                       text=True, env=env, timeout=600, cwd=tmp_path)
    assert not (tmp_path / "PAYLOAD_RAN").exists(), "a payload ran"
    assert not (tmp_path.parent / "escape.txt").exists() and not Path("/etc/flopgap").exists()
    blocks = p.stderr.split("@@case ")[1:]
    assert len(blocks) == len(cases), p.stderr[-2000:]
    for (what, args), block in zip(cases, blocks):
        lines = block.splitlines()[1:]
        rc = int(lines.pop().removeprefix("@@rc ")) if lines and lines[-1].startswith("@@rc ") else 0
        check(rc, "", "\n".join(lines), (0, 2), args)
        if what == "good":
            assert rc == 0, lines
        elif what.startswith(("payload", "graph", "path", "absolute", "aot", "custom", "opaque", "empty", "text",
                              "folder", "pickled")):
            assert rc == 2, (what, lines)


def test_payload_archive_in_a_real_process_runs_nothing(workdir, tmp_path, monkeypatch):
    """The issue's case, as the console script runs it: a torch.export archive whose
    sample inputs are a pickle with a malicious __reduce__; the marker must not exist."""
    marker = tmp_path / "PWNED"
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("FLOPGAP_TEST_MARKER", str(marker))
    payload = _payload_pickle()   # Evil() pickled: unpickling it runs "touch $FLOPGAP_TEST_MARKER"
    evil = _rewrite(_exported(tmp_path / "good.pt2"), tmp_path / "evil.pt2", lambda n, b: [
        (n, payload if n.endswith("data/sample_inputs/model.pt") else b)])
    env = {**os.environ, "FLOPGAP_TEST_MARKER": str(marker), "FLOPGAP_CACHE_DIR": str(workdir / "cache"),
           "PYTHONPATH": str(workdir)}
    p = subprocess.run([FLOPGAP, "count", str(evil), "-i", "2x4"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert not marker.exists(), "the payload ran"
    assert p.returncode in (0, 2)
    if p.returncode == 2:
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: "), p.stderr


# ----------------------------------------------------------------------------- results store
def _sqlite(path: Path, *statements: str) -> Path:
    con = sqlite3.connect(path)
    for s in statements:
        con.execute(s)
    con.commit()
    con.close()
    return path


def test_store_corpus_is_one_line_and_writes_nothing_where_it_should_not(cli, workdir):
    d = workdir / "stores"
    d.mkdir()
    good = d / "good.db"
    cli("count", "seed:ex2-wide", "--db", good)
    empty = d / "empty.db"
    empty.write_bytes(b"")
    cases = {
        "sqlite:///" + str(good) + "?mode=ro": ("count", "read-only"),
        str(empty): ("runs", "not a flopgap results store"),
        str(_sqlite(d / "abc.db", "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)",
                    "INSERT INTO meta VALUES ('schema_version', 'abc')")): ("count", "not a number"),
        str(_sqlite(d / "newer.db", "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)",
                    "INSERT INTO meta VALUES ('schema_version', '999')")): ("runs", "upgrade flopgap"),
        str(_sqlite(d / "foreign.db", "CREATE TABLE measurements(x INT)")): ("count", "not flopgap's"),
        str(_sqlite(d / "foreign_runs.db", "CREATE TABLE runs(x INT)")): ("count", "not a flopgap results store"),
        str(d / "nofolder" / "x.db"): ("count", "does not exist"),
        str(d): ("count", "not a file"),
        "postgresql+nosuchdriver://x/y": ("count", "cannot use --db"),
        "mysql:x.db": ("count", "bad --db URL"),
        str(d / "missing.db"): ("runs", "no results store"),
        "sqlite:///" + str(d / "missing_ro.db") + "?mode=ro": ("runs", "no results store"),
    }
    for url, (command, expect) in cases.items():
        args = ["count", "seed:ex2-wide", "--db", url] if command == "count" else ["runs", "--db", url]
        rc, _, err = cli(*args)
        assert rc == 2 and expect in err, (url, err)
    assert empty.read_bytes() == b""   # reading never writes a schema into a file without one
    assert not (d / "missing.db").exists() and not (d / "missing_ro.db").exists()
    rc, out, _ = cli("runs", "--db", "sqlite:///" + str(good) + "?mode=ro")
    assert rc == 0 and "count" in out   # mode=ro reads
    con = sqlite3.connect(d / "foreign.db")
    assert con.execute("SELECT name FROM sqlite_master").fetchall() == [("measurements",)]   # left as it was


def test_a_read_only_store_file_is_refused_before_measuring(cli, workdir, monkeypatch):
    """A store file this user cannot write (as root every file is writable, so the
    permission answer is what the test sets)."""
    db = workdir / "ro.db"
    cli("count", "seed:ex2-wide", "--db", db)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == db and mode & os.W_OK
                        else real_access(path, mode, **kw))
    rc, out, err = cli("count", "seed:ex2-wide", "--db", db)
    assert rc == 2 and "is read-only for this user" in err and out == ""   # refused before any table is printed
    rc, out, _ = cli("runs", "--db", db)
    assert rc == 0 and "count" in out   # reading it is fine


def test_interrupted_runs_are_stored_as_interrupted(cli, workdir, monkeypatch):
    """time --db and explain --db kept an interrupted payload as a 'finished' run."""
    import flopgap.timing
    from flopgap.timing import FakeClock, TimerOptions

    real = flopgap.timing.measure

    def interrupted(*args, **kwargs):   # what measure returns when Ctrl-C stops its sampling
        clock = FakeClock(1e-3)
        m = real(clock.model, (), TimerOptions(max_time=0.05, min_time=0), clock=clock)
        m.interrupted = True
        return m

    monkeypatch.setattr(flopgap.timing, "measure", interrupted)
    db = workdir / "interrupted.db"
    cli("time", "seed:ex2-wide", "--db", db, codes=(130,))
    cli("explain", "seed:ex2-wide", "--quick-machine", "--db", db, codes=(130,))
    con = sqlite3.connect(db)
    assert con.execute("SELECT kind, status FROM runs ORDER BY id").fetchall() == [
        ("time", "interrupted"), ("explain", "interrupted")]


# ----------------------------------------------------------------------------- machine cache
def test_machine_cache_path_that_is_a_folder_is_one_line(cli, workdir, monkeypatch):
    from flopgap.machine._profile import cache_path, fingerprint

    cache = workdir / "dircache"
    monkeypatch.setenv("FLOPGAP_CACHE_DIR", str(cache))
    cache_path(fingerprint(), True).mkdir(parents=True)
    t0 = time.monotonic()
    rc, _, err = cli("explain", "seed:ex2-wide", "--quick-machine", "--no-measure")
    assert rc == 2 and "is not a file" in err
    assert time.monotonic() - t0 < 30   # refused, not measured for a minute first


# ----------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_while_results_are_written_keeps_them_whole(cli, workdir, monkeypatch):
    """A SIGINT that arrives while --json, --html and --db are written is held until each
    is complete; then the command stops with the one interrupt line."""
    import flopgap._files
    import flopgap.report.html
    from flopgap.store import Store

    real_write, real_put = flopgap._files.write_atomic, Store.put

    def write_then_interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C at the start of the write
        return real_write(*args, **kwargs)

    def put_then_interrupted(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_put(self, *args, **kwargs)

    for name, target in (("json", flopgap._files), ("html", flopgap.report.html)):
        monkeypatch.setattr(target, "write_atomic", write_then_interrupted)
        out = workdir / f"kept.{name}"
        rc, _, err = cli("count", "seed:ex2-wide", f"--{name}", out, codes=(130,))
        assert "kept what was already written" in err and repr(str(out)) in err
        text = out.read_text()
        assert json.loads(text)["model"] == "seed:ex2-wide" if name == "json" else text.rstrip().endswith("</html>")
        monkeypatch.setattr(target, "write_atomic", real_write)
    monkeypatch.setattr(Store, "put", put_then_interrupted)
    db = workdir / "kept.db"
    rc, _, err = cli("count", "seed:ex2-wide", "--db", db, codes=(130,))
    assert "kept what was already written: run 1 in" in err
    con = sqlite3.connect(db)
    assert con.execute("SELECT status, (SELECT COUNT(*) FROM measurements) FROM runs").fetchall() == [("finished", 1)]


def _interrupt_when(cmd: list[str], ready, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``cmd``, send SIGINT once ``ready()`` holds, and return what it printed."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + timeout
    while not ready():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "never got ready"
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def test_ctrl_c_while_a_factory_builds_the_model(workdir, tmp_path):
    started = tmp_path / "started"
    env = {**os.environ, "FLOPGAP_TEST_STARTED": str(started), "FLOPGAP_CACHE_DIR": str(workdir / "cache")}
    p = _interrupt_when([FLOPGAP, "count", "hostile_models:slow", "-i", "1x4", "--json", str(tmp_path / "x.json")],
                        started.exists, {**env, "PYTHONPATH": str(workdir)})
    assert p.returncode == 130
    assert p.stderr.splitlines() == [
        "error: interrupted (Ctrl-C) while loading the model 'hostile_models:slow'; nothing was measured to keep: "
        "run the same command again"]
    assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_ctrl_c_during_a_study_says_what_is_kept_and_how_to_resume(workdir, tmp_path):
    db = tmp_path / "study.db"
    env = {**os.environ, "FLOPGAP_CACHE_DIR": str(workdir / "cache")}
    # --precision 0: each model is timed for its whole second, so the study is still
    # measuring when the first row is stored and the signal is sent
    args = ["study", "zoo", "--models", "seed:ex2-wide,seed:ex2-deep,seed:ex1-small,seed:ex1-large",
            "--max-time", "1", "--precision", "0", "--no-explain", "--quick-profile", "--db", str(db)]

    def one_stored() -> bool:
        try:
            with sqlite3.connect(db) as con:
                return con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] >= 1
        except sqlite3.Error:
            return False

    p = _interrupt_when([FLOPGAP, *args], one_stored, env)
    assert p.returncode == 130, p.stderr
    (line,) = p.stderr.splitlines()[-1:]
    assert line.startswith("error: interrupted (Ctrl-C): run 1 in sqlite:///") and "stored measurement(s)" in line
    resume = line.split("resume with: ", 1)[1]
    assert resume == "flopgap " + " ".join(args) + " --resume"
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
    again = subprocess.run([FLOPGAP, *resume.split()[1:]], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT id, status FROM runs").fetchall() == [(1, "finished")]
        assert con.execute("SELECT COUNT(DISTINCT model) FROM measurements WHERE kind = 'model'").fetchone() == (4,)


def test_names_reach_a_real_terminal_as_text(workdir):
    """The console script with a forced terminal (colours on): rich's own escapes are
    there, the names' are not; their markup is printed, not applied."""
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "200", "PYTHONPATH": str(workdir),
           "FLOPGAP_CACHE_DIR": str(workdir / "cache")}
    p = subprocess.run([FLOPGAP, "count", "hostile_models:all_named", "-i", "1x4"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "\x1b[1m" in p.stdout   # a terminal: rich styles the header
    assert "\\x1b[31mANSI\\x1b[0m" in p.stdout and "\x1b[31mANSI" not in p.stdout
    assert "[link=http://evil]click[/link]" in p.stdout and "\x1b]8;" not in p.stdout   # no live link
    assert "[bold red]RED[/bold red]" in p.stdout and "\\u202eevil" in p.stdout


def test_a_store_failing_mid_run_is_one_line(cli, workdir, monkeypatch):
    """A database that refuses a write after it was opened (disk full, lock timeout)."""
    from sqlalchemy.exc import OperationalError

    from flopgap.store import Store

    def refuse(self, *args, **kwargs):
        raise OperationalError("INSERT", {}, Exception("database or disk is full"))

    monkeypatch.setattr(Store, "put", refuse)
    rc, _, err = cli("count", "seed:ex2-wide", "--db", workdir / "full.db")
    assert rc == 2 and "the results store failed" in err and "disk is full" in err


# ----------------------------------------------------------------------------- results read back
_GOOD_TIME = {"schema": "flopgap.time/1", "kind": "measurement", "median": 1e-3, "ci_low": 9e-4, "ci_high": 1.1e-3,
              "n_samples": 20, "spec": {"name": "m", "inputs": ["1x4:float32"], "threads": 2, "device": "cpu",
                                        "precision": 0.02}}


@pytest.mark.parametrize("what, text", [
    ("nested 100000 deep", "[" * 100000 + "]" * 100000),
    ("not an object", "[1, 2]"),
    ("spec is a number", json.dumps({**_GOOD_TIME, "spec": 5})),
    ("inputs is a number", json.dumps({**_GOOD_TIME, "spec": {**_GOOD_TIME["spec"], "inputs": 5}})),
    ("CI is text", json.dumps({**_GOOD_TIME, "ci_low": "a"})),
    ("zoo rows are numbers", json.dumps({"schema": "flopgap.study.zoo/1", "rows": [5]})),
    ("zoo batch is text", json.dumps({"schema": "flopgap.study.zoo/1", "rows": [{"median": 1.0, "batch": "x"}]})),
    ("not JSON", "{nope"),
], ids=lambda v: v if len(v) < 40 else "")
def test_compare_reads_foreign_json_results_as_one_line(cli, workdir, what, text):
    good, bad = workdir / "good_result.json", workdir / "bad_result.json"
    good.write_text(json.dumps(_GOOD_TIME))
    bad.write_text(text)
    rc, _, err = cli("compare", good, bad)
    assert rc == 2 and "bad_result.json" in err


def test_report_of_a_store_with_foreign_payloads_is_one_line(cli, workdir):
    from flopgap.store import open_store

    db = workdir / "foreign_payloads.db"
    store = open_store(str(db))
    run = store.start_run("zoo", {"zoo": None}, {"cpu_model": "[/]"})
    store.put(run, "[bold]m", "model", {"median": "x", "rows": 5, "batch": "q"}, key="b1")
    store.finish_run(run)
    store.close()
    rc, _, err = cli("report", str(run), "--db", db, "--out", workdir / "foreign.html")
    assert rc == 2 and "holds results flopgap cannot read" in err
    rc, out, _ = cli("runs", "--db", db)
    assert rc == 0 and "zoo" in out
