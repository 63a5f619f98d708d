"""Model and input specs: every accepted form, and a clear UsageError for each bad one."""

import pytest
import torch
from torch import nn

from flopgap.errors import UsageError
from flopgap.models import load_model, make_inputs, parse_input_spec, parse_kwargs, resolve_inputs
from flopgap.models._inputs import InputSpec, with_batch


def test_input_spec_grammar():
    s = parse_input_spec("1x3x224x224")
    assert s == InputSpec((1, 3, 224, 224), "float32")
    t = parse_input_spec("1x128:int64[0,30522)")
    assert (t.shape, t.dtype, t.low, t.high) == ((1, 128), "int64", 0.0, 30522.0)
    assert str(t) == "1x128:int64[0,30522)"
    x = t.make(torch.Generator().manual_seed(0))
    assert x.dtype == torch.int64 and int(x.min()) >= 0 and int(x.max()) < 30522
    assert parse_input_spec("2x8:fp16").dtype == "float16"


@pytest.mark.parametrize("bad", ["", "1x", "x3", "1x0", "1x3:float99", "1x3:int64[5,5)", "1x3[0,1", "abc",
                                 "1x3[0,-)", "1x3[.,1)", "1x4:uint8[0,300)", "1x4:int64[0.5,3)"])
def test_bad_input_specs(bad):
    with pytest.raises(UsageError):
        parse_input_spec(bad)


def test_batch_override_and_reproducible_inputs():
    specs = with_batch((InputSpec((1, 3, 8, 8)), InputSpec((1, 5), "int64", 0, 9)), 4)
    assert [s.shape for s in specs] == [(4, 3, 8, 8), (4, 5)]
    a, b = make_inputs(specs), make_inputs(specs)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(UsageError, match="--batch"):
        with_batch(specs, 0)


def test_torchvision_seed_and_zoo_specs():
    tv = load_model("torchvision:resnet18", {"num_classes": 10})
    assert tv.module.fc.out_features == 10 and not tv.module.training
    assert resolve_inputs(tv)[0].shape == (1, 3, 224, 224)
    seed = load_model("seed:ex2-deep")
    assert len(seed.module) == 10 and resolve_inputs(seed, batch=8)[0].shape == (8, 100)
    assert resolve_inputs(load_model("zoo:bert-tiny"))[0].dtype == "int64"


def test_seed_ex3_as_written_is_unchanged_and_as_intended_is_quantized():
    as_written = load_model("seed:ex3-int8-as-written").module
    assert type(as_written) is nn.Linear  # quantize_dynamic swapped no child: the article's bug
    intended = load_model("seed:ex3-int8").module
    assert "quantized" in type(intended[0]).__module__


@pytest.mark.parametrize("spec,match", [
    ("torchvision:resnet9000", "unknown torchvision"),
    ("seed:nope", "unknown seed model"),
    ("zoo:nope", "unknown zoo model"),
    ("no_such_pkg_xyz.mod:make", "cannot import"),
    ("nonsense", "unknown model spec"),
    ("missing_file.pt2", "does not exist"),
    ("", "empty model spec"),
])
def test_bad_model_specs(spec, match):
    with pytest.raises(UsageError, match=match):
        load_model(spec)


def test_kwargs_for_built_ins():
    with pytest.raises(UsageError, match="takes no --kwargs"):
        load_model("seed:ex2-deep", {"width": 3})
    with pytest.raises(UsageError, match="rejected --kwargs"):
        load_model("zoo:bert-tiny", {"no_such": 1})
    with pytest.raises(UsageError, match="rejected --kwargs"):
        load_model("zoo:bert-tiny", {"heads": 3})  # 128 is not divisible by 3
    assert load_model("zoo:bert-tiny", {"layers": 1}).module.encoder.num_layers == 1


def test_factory_import_leaves_sys_path_alone(tmp_path, monkeypatch):
    import sys

    (tmp_path / "pathcheck.py").write_text("from torch import nn\ndef make():\n    return nn.Linear(2, 2)\n")
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    load_model("pathcheck:make")
    assert sys.path == before


def test_bad_kwargs():
    with pytest.raises(UsageError, match="not valid JSON"):
        parse_kwargs("{num_classes: 10}")
    with pytest.raises(UsageError, match="JSON object"):
        parse_kwargs("[1, 2]")
    with pytest.raises(UsageError, match="rejected --kwargs"):
        load_model("torchvision:resnet18", {"no_such_arg": 1})


def test_factory_specs(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "def good(width=4):\n"
        "    m = nn.Linear(width, 2)\n"
        "    m.example_inputs = (torch.randn(1, width),)\n"
        "    return m\n"
        "def bad():\n"
        "    return 42\n"
        "def boom():\n"
        "    raise ValueError('nope')\n"
        "NOT_CALLABLE = 3\n"
    )
    monkeypatch.chdir(tmp_path)
    good = load_model("mymodels:good", {"width": 6})
    assert good.module.in_features == 6 and resolve_inputs(good)[0].shape == (1, 6)
    with pytest.raises(UsageError, match="not an nn.Module"):
        load_model("mymodels:bad")
    with pytest.raises(UsageError, match="raised while building"):
        load_model("mymodels:boom")
    with pytest.raises(UsageError, match="neither an nn.Module nor a callable"):
        load_model("mymodels:NOT_CALLABLE")
    with pytest.raises(UsageError, match="no attribute"):
        load_model("mymodels:missing")


def test_model_without_declared_inputs_needs_input(tmp_path):
    m = torch.jit.script(nn.Linear(3, 2))
    path = tmp_path / "m.pt"
    torch.jit.save(m, str(path))
    loaded = load_model(str(path))
    assert loaded.source == "torchscript"
    with pytest.raises(UsageError, match="--input"):
        resolve_inputs(loaded)
    assert resolve_inputs(loaded, ["2x3"])[0].shape == (2, 3)


def test_export_program_round_trip_keeps_inputs_and_hierarchy(tmp_path):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    ep = torch.export.export(model, (torch.randn(2, 4),))
    path = tmp_path / "m.pt2"
    torch.export.save(ep, str(path))
    loaded = load_model(str(path))
    assert loaded.source == "export"
    assert resolve_inputs(loaded)[0].shape == (2, 4)
    from flopgap.count import count

    r = count(loaded.module, make_inputs(resolve_inputs(loaded)))
    assert r.macs == 2 * 4 * 8 + 2 * 8 * 2
    assert r.params == 4 * 8 + 8 + 8 * 2 + 2


def test_corrupt_and_pickled_files_are_refused_without_unpickling(tmp_path):
    corrupt = tmp_path / "bad.pt2"
    corrupt.write_bytes(b"not a zip at all")
    with pytest.raises(UsageError, match="not a torch.export archive"):
        load_model(str(corrupt))
    pickled = tmp_path / "full_module.pt"
    torch.save(nn.Linear(2, 2), str(pickled))  # a pickle of a Python object
    with pytest.raises(UsageError, match="never unpickles"):
        load_model(str(pickled))
    other = tmp_path / "weights.onnx"
    other.write_bytes(b"x")
    with pytest.raises(UsageError, match="unknown model file type"):
        load_model(str(other))
