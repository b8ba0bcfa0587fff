"""Triton kernels. Imported lazily by :mod:`unisparse.api` (see its docstring)."""
