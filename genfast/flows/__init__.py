"""Normalizing-flow layers on genfast's fused kernels.

Functional ops (genfast/ops/flows.py): ``rational_quadratic_spline``,
``affine_coupling``, ``additive_coupling``. Modules with nflows' calling
convention (``forward(inputs, context=None) -> (outputs, logabsdet)``,
``inverse(...)``): ``AffineCoupling``, ``AdditiveCoupling``,
``RQSplineCoupling`` (genfast/flows/coupling.py), ``ActNorm``,
``InvertibleConv1x1`` (normalization.py) and ``Sequential`` to chain them.
Drop-ins for nflows models: ``genfast.nflows``.
"""

import torch
from torch import nn

from ..ops.flows import (ACTIVATIONS, additive_coupling, affine_coupling,
                         rational_quadratic_spline)
from .coupling import (MLP, AdditiveCoupling, AffineCoupling, RQSplineCoupling,
                       checkerboard_mask, simple_net)
from .normalization import ActNorm, InvertibleConv1x1


class Sequential(nn.Module):
    """Layers applied in order; logabsdets add up. ``inverse`` runs them backwards."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, inputs, context=None):
        total = inputs.new_zeros(inputs.shape[0])
        for layer in self.layers:
            inputs, lad = layer(inputs, context)
            total = total + lad
        return inputs, total

    def inverse(self, inputs, context=None):
        total = inputs.new_zeros(inputs.shape[0])
        for layer in reversed(self.layers):
            inputs, lad = layer.inverse(inputs, context)
            total = total + lad
        return inputs, total


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over every non-batch dimension."""
    import math
    flat = z.reshape(z.shape[0], -1)
    return -0.5 * (flat * flat).sum(1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


__all__ = ["ACTIVATIONS", "rational_quadratic_spline", "affine_coupling", "additive_coupling",
           "AffineCoupling", "AdditiveCoupling", "RQSplineCoupling", "ActNorm",
           "InvertibleConv1x1", "Sequential", "MLP", "simple_net", "checkerboard_mask",
           "standard_normal_log_prob"]
