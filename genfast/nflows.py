"""``genfast.nflows``: nflows 0.14 drop-ins (genfast/integrations/nflows.py).
Importing it imports nflows (pip install nflows==0.14)."""

from .integrations.nflows import (AdditiveCouplingTransform, AffineCouplingTransform,  # noqa: F401
                                  PiecewiseRationalQuadraticCouplingTransform,
                                  rational_quadratic_spline,
                                  unconstrained_rational_quadratic_spline)

__all__ = ["PiecewiseRationalQuadraticCouplingTransform", "AffineCouplingTransform",
           "AdditiveCouplingTransform", "unconstrained_rational_quadratic_spline",
           "rational_quadratic_spline"]
