"""Shared by the kernel tests: trace a function as a generated target would, generate its kernels,
run them under the Triton interpreter, and report what ran where."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from agnostic_rt.backends.kernel_backend import KernelBackend
from agnostic_rt.config import Options
from agnostic_rt.decomp import decompositions_for
from agnostic_rt.passes.partitioner import KERNEL, partition
from agnostic_rt.runtime.program import build_program
from agnostic_rt.targets import get_target


@dataclass
class Compiled:
    program: torch.fx.GraphModule
    groups: list
    launchers: dict

    @property
    def kernel_groups(self) -> list:
        return [g for g in self.groups if g.kind == KERNEL]

    def failed(self) -> list:
        """Launchers that fell back to ATen at their first launch."""
        return [ln for ln in self.launchers.values() if ln._failed]

    def __call__(self, *args):
        return self.program(*args)


def compile_fn(fn, *args, target: str = "h100", numerics: str = "strict", decompose: bool = True) -> Compiled:
    """``fn`` traced with ``target``'s decompositions (or none), partitioned, every kernel group generated."""
    tgt = get_target(target).with_device("cpu")
    gm = make_fx(fn, decomposition_table=decompositions_for(tgt) if decompose else None)(*args)
    groups = partition(gm, tgt)
    backend = KernelBackend(tgt, Options(target=target, interpret=True, numerics=numerics))
    launchers = {}
    for k, g in enumerate(groups):
        if g.kind == KERNEL:
            ln = backend.compile(g)
            assert ln is not None, f"group {g.ops} was not generated"
            launchers[k] = ln
    return Compiled(build_program(gm, groups, launchers), groups, launchers)


def check(fn, *args, target: str = "h100", rtol=None, atol=None, min_kernels: int = 1,
          decompose: bool = True) -> Compiled:
    """Compile ``fn``, run it under the interpreter and compare every output with eager ATen."""
    c = compile_fn(fn, *args, target=target, decompose=decompose)
    assert len(c.kernel_groups) >= min_kernels, [g.ops for g in c.groups]
    got = c(*args)
    want = fn(*args)
    assert not c.failed(), [ln.kernel.name for ln in c.failed()]
    got = got if isinstance(got, (tuple, list)) else (got,)
    want = want if isinstance(want, (tuple, list)) else (want,)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol, equal_nan=True)
    return c
