"""VAE ops (the seed's auto-encoder side): the reparameterisation trick with
in-kernel noise and the KL divergence to N(0, I), each with a fused backward
(Kingma & Welling 2014, "Auto-Encoding Variational Bayes"), and the two as one
op, ``reparameterize_kl``, for training code that uses both: each gradient is
then produced once. reparameterize / kl_divergence live in
genfast/ops/training.py (the training family), reparameterize_kl in
genfast/ops/vae.py (the vae family)."""

from .ops.training import kl_divergence, reparameterize
from .ops.vae import reparameterize_kl

__all__ = ["reparameterize", "kl_divergence", "reparameterize_kl"]
