"""Normalizing-flow layers on genfast's fused kernels.

Functional ops (genfast/ops/flows.py): ``rational_quadratic_spline``,
``affine_coupling``, ``additive_coupling``. Modules with nflows' calling
convention (``forward(inputs, context=None) -> (outputs, logabsdet)``,
``inverse(...)``) are in genfast/flows/coupling.py and normalization.py.
"""

from ..ops.flows import (ACTIVATIONS, additive_coupling, affine_coupling,
                         rational_quadratic_spline)

__all__ = ["ACTIVATIONS", "rational_quadratic_spline", "affine_coupling", "additive_coupling"]
