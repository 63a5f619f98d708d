"""Stage 5 of the pipeline: variants of a model (int8 dynamic quantization, torch.compile,
bf16/fp16, channels_last; and a training step, ``train-step``) timed against eager across
batch sizes and thread counts.

Every speed-up is eager latency / variant latency from alternating timing with a 95% CI;
a variant that changes nothing is flagged ``no-op``, one that fails is reported with a
one-line reason while the others still run.
"""

from flopgap.variants import _transforms, _train  # noqa: F401  (register the built-in variants, eager first)
from flopgap.variants._findings import VariantFinding
from flopgap.variants._plot import plot_variants
from flopgap.variants._registry import Built, Variant, default_variants, get_variant, register_variant, variant_names
from flopgap.variants._run import VARIANTS_SCHEMA, VariantRow, VariantsResult, run_variants
from flopgap.variants._transforms import torchao_status

__all__ = ["run_variants", "VariantsResult", "VariantRow", "Variant", "Built", "register_variant",
           "get_variant", "variant_names", "default_variants", "plot_variants", "torchao_status",
           "VARIANTS_SCHEMA", "VariantFinding"]
