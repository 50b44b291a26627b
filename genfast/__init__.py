"""genfast: fused PyTorch kernels for generative models.

Public API only; see genfast/backend.py for backend selection and
genfast/ops/ for the ops themselves.
"""

from ._version import __version__
from .backend import (BACKENDS, BackendUnavailableError, get_backend, set_backend,
                      use_backend)
from ._extension import GenfastConfigWarning, GenfastFallbackWarning
from .info import info
from .ops.noise import philox, randn
from .ops.training import add_noise, diffusion_loss
from . import schedules, steps, vae
from .sample import sample

__all__ = [
    "__version__", "BACKENDS", "BackendUnavailableError", "GenfastFallbackWarning",
    "GenfastConfigWarning",
    "get_backend", "set_backend", "use_backend", "info", "randn", "philox",
    "add_noise", "diffusion_loss", "schedules", "steps", "vae",
    "flows", "nflows", "profile", "sample", "k_diffusion", "diffusers",
]


def __getattr__(name):
    # genfast.flows (layers), genfast.nflows (imports nflows), genfast.diffusers
    # (imports diffusers), genfast.k_diffusion and genfast.profile (a callable
    # module: genfast.profile(...)) load on first use
    if name in ("flows", "nflows", "profile", "k_diffusion", "diffusers"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'genfast' has no attribute {name!r}")
