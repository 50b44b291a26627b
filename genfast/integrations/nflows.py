"""nflows 0.14 drop-ins on genfast's fused kernels: change an import, keep the model.

    from genfast.nflows import PiecewiseRationalQuadraticCouplingTransform
    # instead of: from nflows.transforms import PiecewiseRationalQuadraticCouplingTransform

The classes subclass nflows' own (constructor, masks, networks, state dicts
and every other method are nflows'); only the per-element transform is
replaced by one fused genfast op with a fused backward, without nflows'
boolean-mask gathers and host syncs. Results match nflows to float32
rounding (tests/test_flows_modules.py); the inverse stays finite where
nflows' float32 inverse can hit a negative discriminant.

Also the functional forms with nflows' signatures:
``unconstrained_rational_quadratic_spline`` and ``rational_quadratic_spline``
(bounded; inputs outside [left, right] continue linearly instead of raising
InputOutsideDomain, which would need a host sync).
"""

from __future__ import annotations

import warnings

import numpy as np
from nflows.transforms import coupling as _nf_coupling
from nflows.utils import torchutils

from ..ops import flows as _ops

DEFAULT_MIN_BIN_WIDTH = DEFAULT_MIN_BIN_HEIGHT = DEFAULT_MIN_DERIVATIVE = 1e-3


def unconstrained_rational_quadratic_spline(inputs, unnormalized_widths, unnormalized_heights,
                                            unnormalized_derivatives, inverse=False,
                                            tails="linear", tail_bound=1.0,
                                            min_bin_width=DEFAULT_MIN_BIN_WIDTH,
                                            min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
                                            min_derivative=DEFAULT_MIN_DERIVATIVE):
    """nflows.transforms.splines.unconstrained_rational_quadratic_spline, fused."""
    if tails != "linear":
        raise RuntimeError(f"{tails} tails are not implemented.")
    return _ops.rational_quadratic_spline(
        inputs, unnormalized_widths, unnormalized_heights, unnormalized_derivatives,
        inverse=inverse, tails="linear", tail_bound=tail_bound, min_bin_width=min_bin_width,
        min_bin_height=min_bin_height, min_derivative=min_derivative)


def rational_quadratic_spline(inputs, unnormalized_widths, unnormalized_heights,
                              unnormalized_derivatives, inverse=False, left=0.0, right=1.0,
                              bottom=0.0, top=1.0, min_bin_width=DEFAULT_MIN_BIN_WIDTH,
                              min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
                              min_derivative=DEFAULT_MIN_DERIVATIVE):
    """nflows.transforms.splines.rational_quadratic_spline (bounded), fused."""
    return _ops.rational_quadratic_spline(
        inputs, unnormalized_widths, unnormalized_heights, unnormalized_derivatives,
        inverse=inverse, tails=None, min_bin_width=min_bin_width,
        min_bin_height=min_bin_height, min_derivative=min_derivative, left=left, right=right,
        bottom=bottom, top=top)


class PiecewiseRationalQuadraticCouplingTransform(
        _nf_coupling.PiecewiseRationalQuadraticCouplingTransform):
    """nflows' spline coupling with the fused genfast spline."""

    def _piecewise_cdf(self, inputs, transform_params, inverse=False):
        k = self.num_bins
        uw = transform_params[..., :k]
        uh = transform_params[..., k:2 * k]
        ud = transform_params[..., 2 * k:]
        net = self.transform_net
        hidden = getattr(net, "hidden_features", getattr(net, "hidden_channels", None))
        if hidden is not None:  # nflows divides in place; we do not mutate the net's output
            uw = uw / np.sqrt(hidden)
            uh = uh / np.sqrt(hidden)
        else:
            warnings.warn("Inputs to the softmax are not scaled down: initialization might be bad.")
        if self.tails is None:
            return rational_quadratic_spline(
                inputs, uw, uh, ud, inverse=inverse, min_bin_width=self.min_bin_width,
                min_bin_height=self.min_bin_height, min_derivative=self.min_derivative)
        return unconstrained_rational_quadratic_spline(
            inputs, uw, uh, ud, inverse=inverse, tails=self.tails, tail_bound=self.tail_bound,
            min_bin_width=self.min_bin_width, min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative)


class AffineCouplingTransform(_nf_coupling.AffineCouplingTransform):
    """nflows' affine coupling (scale = sigmoid(u + 2) + 1e-3) with the fused
    genfast affine op: scale, shift and log-determinant in one pass."""

    _genfast_activation = "sigmoid"

    def _split(self, transform_params):
        n = self.num_transform_features
        if self._genfast_activation == "none":
            return transform_params, transform_params
        return transform_params[:, :n, ...], transform_params[:, n:, ...]

    def _coupling_transform_forward(self, inputs, transform_params):
        shift, u = self._split(transform_params)
        return _ops.affine_coupling(inputs, shift, u, self._genfast_activation, 0.0, False)

    def _coupling_transform_inverse(self, inputs, transform_params):
        shift, u = self._split(transform_params)
        return _ops.affine_coupling(inputs, shift, u, self._genfast_activation, 0.0, True)


class AdditiveCouplingTransform(AffineCouplingTransform,
                                _nf_coupling.AdditiveCouplingTransform):
    """nflows' additive coupling (NICE) with the fused genfast op."""

    _genfast_activation = "none"

    def _transform_dim_multiplier(self):
        return 1


del torchutils
