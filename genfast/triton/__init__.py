"""Triton kernels. Importing a module here imports triton: set TRITON_INTERPRET
before that to run the kernels on the CPU interpreter."""
