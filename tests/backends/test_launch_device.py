"""A generated kernel's outputs go where the graph says, even when it has no tensor inputs.

Seen on an H200: arange/full/scalar_tensor kernels allocated their outputs on the CPU (nothing else to
go by) and fell back to ATen at their first launch.
"""

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx

from agnostic_rt import passes
from agnostic_rt.backends import for_target
from agnostic_rt.config import Options
from agnostic_rt.targets import get_target


def test_factory_kernel_launcher_targets_the_graphs_device():
    def fn(x):
        # arange over another size than x: one space would fuse the two into one kernel.
        return x * 2.0, torch.arange(8, device=x.device, dtype=torch.float32) + 1.0

    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        # A fake CUDA tensor: meta storage that reports device cuda:0, so no GPU (or CUDA build) is needed.
        x = FakeTensor(mode, torch.empty(16, device="meta"), torch.device("cuda:0"))
        gm = make_fx(fn)(x)
    target = get_target("h100")
    backend = for_target(target, Options(target="h100"))
    launchers = [backend.compile(g) for g in passes.partition(gm, target) if g.kind == "kernel"]
    launchers = [lc for lc in launchers if lc is not None]
    assert launchers, "no kernel was generated"
    factory = [lc for lc in launchers if not lc.in_strides]
    assert factory, "the arange kernel should have no tensor inputs"
    assert all(lc._device.type == "cuda" for lc in factory)
