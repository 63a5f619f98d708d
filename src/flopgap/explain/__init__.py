"""Stage 5 of the pipeline: explain the gap between FLOPs and latency on this machine.

- :func:`explain`: ``torch.profiler`` times joined to the count, each op classed
  compute-, memory- or overhead-bound by a roofline on the measured ceilings
  (``max(FLOPs/peak, bytes/bandwidth, dispatch overhead)``), findings with numbers;
- :func:`predict`: latency from the count and the machine profile alone;
- :func:`roofline_plot`: one point per op and the model total on this machine's roofline.

Conventions as in counting: a fused multiply-add is 2 FLOPs; bytes are each tensor
input read once plus each output written once.
"""

from flopgap.explain._attribute import LAUNCH_EVENTS, count_launches
from flopgap.explain._explain import EXPLAIN_SCHEMA, Explanation, build_explanation, explain
from flopgap.explain._plot import roofline_plot
from flopgap.explain._predict import PREDICT_SCHEMA, Interval, Prediction, PredictionCheck, Predictor, predict
from flopgap.explain._records import Bound, ClassShare, ExplainedOp, Finding, ModuleTime, OpRef, Totals
from flopgap.explain._roofline import Roofline, classify
from flopgap.explain._weights import weight_bytes

__all__ = ["explain", "Explanation", "build_explanation", "predict", "Prediction", "PredictionCheck", "Interval", "Predictor",
           "Bound", "ExplainedOp", "ModuleTime", "ClassShare", "Totals", "Finding", "OpRef", "classify", "Roofline",
           "roofline_plot", "count_launches", "LAUNCH_EVENTS", "EXPLAIN_SCHEMA", "PREDICT_SCHEMA", "weight_bytes"]
