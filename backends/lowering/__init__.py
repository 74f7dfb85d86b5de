"""Lowering: a fused group of ATen FX nodes -> one vendor-neutral KernelIR, the input of every emitter."""
