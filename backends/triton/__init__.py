"""Triton: KernelIR -> @triton.jit source, its loading (compiled or interpreted) and its launches."""
