"""The ``train-step`` variant: one training step of the model, timed like any variant.

A step is a forward in training mode, a mean-squared error against a fixed random
target of the output's shape, ``backward()``, an SGD update and
``zero_grad(set_to_none=True)`` (``torch.optim.SGD``, learning rate :data:`TRAIN_STEP_LR`). It is not a remedy:
its row's ratio to eager is the cost of a step in inference calls, reported as such.

Why this loss and rate: the timer runs thousands of steps, and their kernels must stay
the same from the first to the last. A fixed non-zero target keeps the weights away
from zero (a loss minimised at a zero output would shrink them into subnormal floats,
whose arithmetic is many times slower on CPUs), and a small rate keeps them from
diverging into infinities.
"""

from __future__ import annotations

import torch
from torch import nn

from flopgap.variants._registry import Built, Variant, register_variant

__all__ = ["TRAIN_STEP_LR"]

TRAIN_STEP_LR = 1e-4  # small: thousands of timed steps move the weights little and never diverge


def _float_outputs(out) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.is_floating_point()]


class TrainStep(nn.Module):
    """``forward(*inputs)`` runs one training step of ``model`` and returns its outputs
    (detached). Autograd is turned on inside, so the step runs the same under
    ``torch.inference_mode()`` (where the timer runs every variant)."""

    def __init__(self, model: nn.Module, lr: float = TRAIN_STEP_LR):
        super().__init__()
        self.model = model.train()
        params = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
        if not params:
            raise ValueError("the model has no trainable floating-point parameters")
        self.optimizer = torch.optim.SGD(params, lr=lr)
        self._targets: dict[tuple, list[torch.Tensor]] = {}

    def _target(self, outs: list[torch.Tensor]) -> list[torch.Tensor]:
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in outs)
        targets = self._targets.get(key)
        if targets is None:
            gen = torch.Generator().manual_seed(0)
            targets = self._targets[key] = [torch.randn(t.shape, generator=gen).to(t.device, t.dtype) for t in outs]
        return targets

    def forward(self, *inputs):
        with torch.inference_mode(False), torch.enable_grad():
            out = self.model(*inputs)
            outs = [t for t in _float_outputs(out) if t.requires_grad]
            if not outs:
                raise ValueError("no floating-point output requires grad: nothing to train")
            loss = sum(nn.functional.mse_loss(t, y) for t, y in zip(outs, self._target(outs)))
            loss.backward()
            self.optimizer.step()
            # at the end rather than the start (the same work): a step then frees what it
            # allocated, and one profiled call sees its whole memory life
            self.optimizer.zero_grad(set_to_none=True)
        return [t.detach() for t in outs]


def _has_trainable(module: nn.Module, device: str) -> bool:
    return any(p.is_floating_point() for p in module.parameters())


def _train_step(module: nn.Module, inputs: tuple) -> Built:
    for p in module.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    step = TrainStep(module)
    return Built(step, step, notes=[
        f"one training step: forward in training mode, MSE against a fixed random target, backward, "
        f"SGD(lr={TRAIN_STEP_LR:g}) update, zero_grad(set_to_none=True); autograd on inside the step. Its ratio to eager "
        "is the step's cost in inference calls (eager: inference_mode, eval mode), not a speed-up; outputs "
        "are not compared (training mode, and the weights move every step)"])


register_variant(Variant(
    "train-step", "one training step (forward + backward + SGD update, zero_grad) against an inference call",
    _train_step, _has_trainable, default=False, remedy=False))
