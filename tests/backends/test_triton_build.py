"""Generated kernels build for both vendors with triton.compile(ASTSource, GPUTarget) — no GPU needed.

The whole-zoo build is marked slow (cold: a few CPU-minutes for ~90 kernels x 4 targets; Triton's
disk cache makes reruns fast). A sample of every kernel shape runs always.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from kernel_harness import compile_fn

from agnostic_rt.backends.triton.emit import PERSISTENT_MAX_R
from agnostic_rt.backends.triton.registry import GPU_TARGETS, build_for, generated_kernels

ARCHS = list(GPU_TARGETS)  # sm_80, sm_90, gfx90a, gfx942
BINARY = {"cuda": "cubin", "hip": "hsaco"}


@functools.cache
def sample_kernels() -> tuple:
    """One kernel of each shape the emitter produces."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(33, 70, generator=g)
    cases = [
        (lambda a: torch.tanh(a.t() * 2) + 1, x),  # pointwise, transposed input
        (lambda a: torch.softmax(a, -1), x),  # persistent reduction
        (lambda a: torch.softmax(a, -1), torch.randn(2, PERSISTENT_MAX_R + 5, generator=g)),  # looped
        (lambda a: torch.argmax(a + 0, 1), torch.randn(2, PERSISTENT_MAX_R + 5, generator=g)),  # looped arg
        (lambda a: torch.argmin(a * 2, 1), x),  # persistent arg-reduction
        (lambda w, i: F.embedding(i, w) * 2, torch.randn(50, 24, generator=g), torch.randint(0, 50, (3, 7))),
        (lambda a, b: torch.cat([a, b.exp()], 1), x, x[:, :5].to(torch.float16)),  # masked loads, half
        (lambda a: (a.to(torch.bfloat16) * 3).sum(0), x),  # bf16, column reduction
        (lambda a: (a > 0).sum(1), x),  # bool -> int64 accumulation
    ]
    kernels = []
    for fn, *args in cases:
        c = compile_fn(fn, *args)
        kernels += [ln.gk for ln in c.launchers.values()]
    return tuple(kernels)


@pytest.mark.parametrize("arch", ARCHS)
def test_sample_kernels_build_for(arch):
    backend = GPU_TARGETS[arch][0]
    for k in sample_kernels():
        compiled = build_for(k, arch)
        assert compiled.asm.get(BINARY[backend]), (k.name, list(compiled.asm))


def test_compiled_and_interpreted_forms_come_from_one_source_file():
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    k = sample_kernels()[0]
    assert isinstance(k.function(interpret=False), JITFunction)
    assert isinstance(k.function(interpret=True), InterpretedFunction)
    assert k.path.read_text() == k.source


def test_build_for_accepts_a_part_name():
    compiled = build_for(sample_kernels()[0], "mi300x")
    assert compiled.asm.get("hsaco")


def zoo_kernels(zoo_coverage) -> tuple:
    for name in ("mlp", "cnn", "gpt2", "bert"):
        zoo_coverage(name)
    return tuple(generated_kernels())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_zoo_kernel_builds_for(arch, zoo_coverage):
    failures = []
    for k in zoo_kernels(zoo_coverage):
        try:
            build_for(k, arch)
        except Exception as e:  # collect them all: one report per target
            failures.append((k.name, repr(e)[:200]))
    assert not failures, failures
