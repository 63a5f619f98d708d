"""Formulas for the ops of a training step: the fused kernels autograd dispatches in a
backward pass (``count(..., backward=True)``), losses, and the optimizer's markers.

Same conventions as the forward formulas (a fused multiply-add is 2 FLOPs; bytes by the
generic rule unless stated). Gradients of matmuls, ``mm``/``bmm``/``sum``/pointwise ops,
are ordinary ops with their forward formulas; this module covers the fused backward
kernels. Each is counted from its arguments, never as a multiple of the forward:

- ``convolution_backward``: the input gradient is a transposed convolution and the
  weight gradient a convolution of the same MACs as the forward; each is counted only
  when autograd asks for it (``output_mask``; the first layer's input gradient is not
  computed unless the input requires grad). Bias gradient: a reduction of the output
  gradient, 1 FLOP per element.
- Norms with batch statistics (batch norm in training): per element, recompute the
  normalised input (2), ``sum(dy)`` (1) and ``sum(dy * x_hat)`` (2), which are also the
  bias and weight gradients; the input gradient adds 4 (``dy - mean(dy) - x_hat *
  mean(dy x_hat)``, scaled). Layer and group norm reduce over other axes for the weight
  gradients: normalised input 2; input gradient 7 (+1 for ``dy * weight``); weight
  gradient 2; bias gradient 1. Batch norm with running statistics (eval): input
  gradient 1, weight gradient 4, bias gradient 1.
- Softmax / log-softmax backward: 4 per element.
- Pooling backward: average pools, the forward's count (each window element gets its
  share: one add); max pools: 1 per output-gradient element (added at its argmax).
- Interpolation backward: 8 per output-gradient element (linear family), nearest: 1.
- Embedding backward: 1 per output-gradient element (accumulated into its row).
- Gradients of views (``select_backward``, ``slice_backward`` ...): data movement, 0 FLOPs;
  they write the whole input-sized gradient (bytes by the generic rule).
- Attention backward (fused SDPA kernels): the four matmuls ``dV = P^T dO``,
  ``dP = dO V^T``, ``dQ = dS K``, ``dK = dS^T Q``: ``2*B*P*(E+Ev)`` MACs, plus 5 per
  score (softmax backward 4, scale 1). Work a kernel repeats to save memory (flash
  attention recomputes the scores) is not counted, as in ``torch.utils.flop_counter``.
- Activation backward kernels that are not tagged pointwise (``hardswish_backward``,
  ``elu_backward`` ...): 1 per element, like their forward.
- Losses: MSE and L1 3 per element (difference, square or absolute value, sum), smooth
  L1 / Huber 4; their backward kernels 3 per element (difference, scale, multiply by
  the incoming gradient). NLL: 1 per target element (picking and summing), its
  backward 1 per target element.
- ``torch.optim`` wraps ``step`` and ``zero_grad`` in ``record_function`` markers: free
  (profiler metadata, no kernel).
"""

from __future__ import annotations

from flopgap.count._formulas import _prod, adaptive_window_total, aten, attended_pairs, conv_macs, pointwise
from flopgap.count._registry import ZERO, Cost, Meta, declare_free, register_formula

__all__: list[str] = []  # formulas are reached through the registry, not imported

_SCORE_BACKWARD_FLOPS = 5  # softmax backward (4) + scale (1) per query-key score


def _mask(a: dict, n: int = 3) -> tuple[bool, ...]:
    mask = a.get("output_mask")
    return tuple(bool(m) for m in mask) if mask is not None else (True,) * n


# ---------------------------------------------------------------- convolution
@register_formula(aten.convolution_backward, aten.convolution_backward_overrideable, family="conv")
def _conv_backward(a, outs):
    dy, x, w = a["grad_output"], a["input"], a["weight"]
    macs = conv_macs(x.shape, w.shape, dy.shape, bool(a["transposed"]))
    want_input, want_weight, want_bias = _mask(a)
    total = macs * (int(want_input) + int(want_weight))
    return Cost(flops=2 * total + (dy.numel if want_bias else 0), macs=total)


# ---------------------------------------------------------------- norms
@register_formula(aten.native_batch_norm_backward, aten.cudnn_batch_norm_backward, aten.miopen_batch_norm_backward,
                  aten.batch_norm_backward, family="norm")
def _batch_norm_backward(a, outs):
    x = a["input"]
    want_input, want_weight, want_bias = _mask(a)
    train = bool(a.get("train", a.get("update", True)))
    if train:
        return Cost(flops=x.numel * (5 + (4 if want_input else 0)))
    return Cost(flops=x.numel * (int(want_input) + (4 if want_weight else 0) + int(want_bias)))


def _affine_norm_backward(a, outs):
    x = a["input"]
    want_input, want_weight, want_bias = _mask(a)
    has_weight = isinstance(a.get("weight"), Meta)
    per = 2 if (want_input or want_weight) else 0  # the normalised input, recomputed
    per += (7 + int(has_weight)) if want_input else 0
    per += (2 if want_weight else 0) + (1 if want_bias else 0)
    return Cost(flops=x.numel * per)


register_formula(aten.native_layer_norm_backward, aten.native_group_norm_backward, family="norm")(
    _affine_norm_backward)


# ---------------------------------------------------------------- softmax
@register_formula(aten._softmax_backward_data, aten._log_softmax_backward_data, family="softmax")
def _softmax_backward(a, outs):
    return Cost(flops=4 * a["grad_output"].numel)


# ---------------------------------------------------------------- pooling
def _avg_pool_backward(dims: int):
    def formula(a, outs):
        kernel = a["kernel_size"]
        kernel = (kernel,) * dims if isinstance(kernel, int) else tuple(kernel)
        kernel = kernel * dims if len(kernel) == 1 else kernel
        return Cost(flops=a["grad_output"].numel * _prod(kernel))

    return formula


register_formula(aten.avg_pool2d_backward, family="pool")(_avg_pool_backward(2))
register_formula(aten.avg_pool3d_backward, family="pool")(_avg_pool_backward(3))


def _adaptive_avg_backward(dims: int):
    def formula(a, outs):
        dy, x = a["grad_output"], a["self"]
        total = _prod(x.shape[:-dims])
        for i_s, o_s in zip(x.shape[-dims:], dy.shape[-dims:]):
            total *= adaptive_window_total(i_s, o_s)
        return Cost(flops=total)

    return formula


register_formula(aten._adaptive_avg_pool2d_backward, family="pool")(_adaptive_avg_backward(2))
register_formula(aten._adaptive_avg_pool3d_backward, family="pool")(_adaptive_avg_backward(3))


@register_formula(aten.max_pool2d_with_indices_backward, aten.max_pool3d_with_indices_backward,
                  aten.adaptive_max_pool2d_backward, aten.adaptive_max_pool3d_backward, family="pool")
def _max_pool_backward(a, outs):
    return Cost(flops=a["grad_output"].numel)


# ---------------------------------------------------------------- interpolation, embedding
@register_formula(aten.upsample_bilinear2d_backward, aten.upsample_bicubic2d_backward,
                  aten.upsample_linear1d_backward, aten.upsample_trilinear3d_backward,
                  aten._upsample_bilinear2d_aa_backward, family="pointwise")
def _interpolate_backward(a, outs):
    return Cost(flops=8 * a["grad_output"].numel)


@register_formula(aten.upsample_nearest1d_backward, aten.upsample_nearest2d_backward,
                  aten.upsample_nearest3d_backward, aten._upsample_nearest_exact2d_backward, family="pointwise")
def _nearest_backward(a, outs):
    return Cost(flops=a["grad_output"].numel)


@register_formula(aten.embedding_dense_backward, aten.embedding_backward, family="embedding")
def _embedding_backward(a, outs):
    return Cost(flops=a["grad_output"].numel)


register_formula(aten.select_backward, aten.slice_backward, aten.diagonal_backward, aten.unfold_backward,
                 aten.as_strided_scatter, family="data-movement")(lambda a, outs: ZERO)


# ---------------------------------------------------------------- attention
def attention_backward_cost(q: tuple, k: tuple, v: tuple, causal: bool) -> Cost:
    batch = _prod(q[:-2])
    pairs = attended_pairs(q[-2], k[-2], causal)
    macs = 2 * batch * pairs * (q[-1] + v[-1])  # dV, dP (E_v each); dQ, dK (E each)
    return Cost(flops=2 * macs + _SCORE_BACKWARD_FLOPS * batch * pairs, macs=macs)


@register_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward,
                  aten._scaled_dot_product_flash_attention_backward,
                  aten._scaled_dot_product_efficient_attention_backward,
                  aten._scaled_dot_product_cudnn_attention_backward,
                  aten._scaled_dot_product_fused_attention_overrideable_backward, family="attention")
def _sdpa_backward(a, outs):
    return attention_backward_cost(a["query"].shape, a["key"].shape, a["value"].shape,
                                   bool(a.get("is_causal", False)))


# ---------------------------------------------------------------- activations not tagged pointwise
register_formula(
    aten.hardswish_backward, aten.hardsigmoid_backward, aten.elu_backward, aten.leaky_relu_backward,
    aten.hardtanh_backward, aten.softplus_backward, aten.mish_backward, aten.glu_backward,
    aten.rrelu_with_noise_backward, aten._prelu_kernel_backward, family="pointwise",
)(pointwise)


# ---------------------------------------------------------------- losses
def _per_input_element(factor: int, key: str):
    def formula(a, outs):
        return Cost(flops=factor * a[key].numel)

    return formula


register_formula(aten.mse_loss, aten.l1_loss, family="loss")(_per_input_element(3, "self"))
register_formula(aten.smooth_l1_loss, aten.huber_loss, family="loss")(_per_input_element(4, "self"))
register_formula(aten.mse_loss_backward, aten.l1_loss_backward, aten.smooth_l1_loss_backward,
                 aten.huber_loss_backward, family="loss")(_per_input_element(3, "self"))
register_formula(aten.nll_loss_forward, aten.nll_loss2d_forward, aten.nll_loss_backward, aten.nll_loss2d_backward,
                 family="loss")(_per_input_element(1, "target"))


# ---------------------------------------------------------------- optimizer markers
declare_free("profiler._record_function_enter", "profiler._record_function_enter_new",
             "profiler._record_function_exit", family="metadata")
