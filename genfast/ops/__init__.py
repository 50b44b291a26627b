"""Op dispatch: argument checks, backend resolution, fake kernels, autograd."""
