"""k-diffusion 0.1.1.post1's samplers (k_diffusion/sampling.py) for parity
tests, loaded on their own.

``import k_diffusion`` runs the package __init__, which imports every
submodule: models and evaluation pull in clip, torchvision, skimage and
others that are not installed here (and are not needed to sample). The
samplers need only scipy, torchdiffeq, torchsde, tqdm and one helper of
k_diffusion.utils (``append_dims``, whose module itself imports torchvision
and PIL). So this loads sampling.py from the installed package files with
importlib under a private package whose ``utils`` is a stub holding that
helper, copied in meaning: append trailing singleton dims. Nothing is
copied from k-diffusion; the file itself is executed as installed.

``load()`` returns the sampling module, or None when k-diffusion (or one of
sampling.py's own dependencies) is not installed: callers skip then.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

_PKG = "_genfast_kdiff"
_cached = None


def _append_dims(x, target_dims):
    extra = target_dims - x.ndim
    if extra < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}")
    return x[(...,) + (None,) * extra]


def load():
    """k_diffusion.sampling, or None when it cannot be loaded here."""
    global _cached
    if _cached is not None:
        return _cached
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = None
    for loc in spec.submodule_search_locations:
        cand = f"{loc}/sampling.py"
        try:
            open(cand).close()
            path = cand
            break
        except OSError:
            continue
    if path is None:
        return None
    pkg = types.ModuleType(_PKG)
    pkg.__path__ = []
    utils = types.ModuleType(f"{_PKG}.utils")
    utils.append_dims = _append_dims
    pkg.utils = utils
    sys.modules.setdefault(_PKG, pkg)
    sys.modules.setdefault(f"{_PKG}.utils", utils)
    loader = importlib.machinery.SourceFileLoader(f"{_PKG}.sampling", path)
    mspec = importlib.util.spec_from_loader(f"{_PKG}.sampling", loader)
    mod = importlib.util.module_from_spec(mspec)
    mod.__package__ = _PKG
    try:
        loader.exec_module(mod)
    except ImportError:
        return None
    sys.modules[f"{_PKG}.sampling"] = mod
    _cached = mod
    return mod
