"""VAE ops (the seed's auto-encoder side): the reparameterisation trick with
in-kernel noise and the KL divergence to N(0, I), each with a fused backward
(Kingma & Welling 2014, "Auto-Encoding Variational Bayes"). Implemented in
genfast/ops/training.py, the training family."""

from .ops.training import kl_divergence, reparameterize

__all__ = ["reparameterize", "kl_divergence"]
