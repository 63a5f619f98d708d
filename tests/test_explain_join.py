"""Profiler attribution: launch counting and the join of profiler events to count records."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from flopgap.count import count
from flopgap.explain import count_launches
from flopgap.explain._attribute import align, profile_ops, profiler_name, top_level_ops


@dataclass
class Ev:
    name: str
    cpu_children: list = field(default_factory=list)
    input_shapes: list = field(default_factory=list)


@dataclass
class Rec:
    op: str
    input_shapes: list


def test_count_launches_over_a_fake_event_tree():
    # aten::linear -> aten::addmm -> (cudaLaunchKernel, cudaLaunchKernelExC), aten::t (none), cuLaunchKernel
    tree = Ev("aten::linear", [
        Ev("aten::t", [Ev("aten::transpose")]),
        Ev("aten::addmm", [Ev("cudaLaunchKernel"), Ev("cudaLaunchKernelExC"), Ev("cudaMemsetAsync")]),
        Ev("cuLaunchKernel"),
    ])
    assert count_launches(tree) == 3
    assert count_launches(Ev("cudaLaunchKernel")) == 1
    assert count_launches(Ev("aten::relu")) == 0


def test_top_level_ops_stop_at_the_first_op_event():
    marker = Ev("flopgap::call", [
        Ev("aten::conv2d", [Ev("aten::convolution", [Ev("aten::_convolution")])]),
        Ev("some_scope", [Ev("aten::relu_", [Ev("aten::clamp_min_")])]),
        Ev("profiler::_record_function_exit"),
        Ev("cudaLaunchKernel"),
    ])
    tops = top_level_ops(marker, frozenset({"aten"}))
    assert [e.name for e in tops] == ["aten::conv2d", "aten::relu_"]


def test_profiler_name():
    assert profiler_name("aten.conv2d.default") == "aten::conv2d"
    assert profiler_name("quantized.linear_dynamic.default") == "quantized::linear_dynamic"


def test_align_skips_extra_events_and_uses_shapes_to_break_ties():
    recs = [Rec("aten.linear.default", [[1, 8], [8, 8], [8]]), Rec("aten.relu.default", [[1, 8]]),
            Rec("aten.add.Tensor", [[1, 4], [1, 4]])]
    evs = [Ev("aten::empty"), Ev("aten::linear", input_shapes=[[1, 8], [8, 8], [8]]),
           Ev("aten::relu", input_shapes=[[9, 9]]), Ev("aten::relu", input_shapes=[[1, 8]]),
           Ev("aten::add", input_shapes=[[1, 4], [1, 4]])]
    assert align(recs, evs) == [1, 3, 4]


def test_align_marks_missing_records_none():
    recs = [Rec("aten.linear.default", []), Rec("aten.mul.Tensor", []), Rec("aten.relu.default", [])]
    evs = [Ev("aten::linear"), Ev("aten::relu")]
    assert align(recs, evs) == [0, None, 1]


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = x + 1.0
        return self.fc(torch.flatten(x, 1))


def test_every_counted_kernel_op_gets_a_time_on_a_small_model():
    model = Small().eval()
    x = torch.randn(1, 3, 8, 8)
    res = count(model, (x,))
    att = profile_ops(model, (x,), res.ops, calls=3)
    assert att.calls == 3
    kernel = [i for i, r in enumerate(res.ops) if not r.is_free]
    assert [res.ops[i].op for i in kernel] == ["aten.conv2d.default", "aten.batch_norm.default",
                                               "aten.relu.default", "aten.add.Tensor", "aten.linear.default"]
    assert all(att.times[i] is not None and att.times[i] > 0 for i in kernel)
    assert att.unmatched_events == {}
    assert att.call_s >= att.ops_s > 0
    assert att.launches == [0] * len(res.ops)   # CPU: no kernel launches


def test_gpu_side_annotations_are_not_calls():
    # on CUDA the profiler records each record_function range twice: on the host, with
    # the ops under it, and as a GPU-side annotation of the same name with no children
    from torch.autograd import DeviceType

    from flopgap.explain._attribute import _host_side

    @dataclass
    class DevEv:
        name: str
        device_type: object

    evs = [DevEv("flopgap::call", DeviceType.CPU), DevEv("flopgap::call", DeviceType.CUDA),
           DevEv("aten::relu", DeviceType.CPU), DevEv("flopgap::call", DeviceType.CPU)]
    assert _host_side(evs, "flopgap::call") == [evs[0], evs[3]]


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x, *, scale):
        return self.fc(x) * scale


def test_keyword_inputs_reach_the_profiled_calls():
    from flopgap.models import Inputs

    model = _Scaled().eval()
    inputs = Inputs((torch.randn(3, 4),), {"scale": torch.tensor(2.0)})
    res = count(model, inputs)
    assert [r.op for r in res.kernel_ops] == ["aten.linear.default", "aten.mul.Tensor"]
    att = profile_ops(model, inputs, res.ops, calls=3)  # the model needs scale=: it must be bound
    assert att.calls == 3 and all(att.times[i] for i, r in enumerate(res.ops) if not r.is_free)
