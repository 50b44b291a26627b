"""Pure-PyTorch reference implementations: the executable spec of every op."""
