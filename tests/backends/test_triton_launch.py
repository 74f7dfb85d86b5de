"""Launching generated kernels: layouts at call time, the tuning cache, the cache directory, dynamic
shapes, and the backend's choice per target."""

from __future__ import annotations

import logging
import random

import pytest
import torch
from kernel_harness import compile_fn

from agnostic_rt.backends import AtenBackend, for_target
from agnostic_rt.backends.kernel_backend import KernelBackend
from agnostic_rt.backends.lowering.kernel_ir import KernelBuilder, Var
from agnostic_rt.backends.triton.emit import emit_triton
from agnostic_rt.backends.triton.launch import KernelLauncher, TuningCache, candidate_configs
from agnostic_rt.backends.triton.registry import register
from agnostic_rt.config import Options
from agnostic_rt.targets import get_target


def test_gpu_targets_get_triton_and_the_cpu_gets_aten():
    assert isinstance(for_target(get_target("mi300x").with_device("cpu"), Options(interpret=True)), KernelBackend)
    assert isinstance(for_target(get_target("h100"), Options()), KernelBackend)
    assert isinstance(for_target(get_target("cpu"), Options()), AtenBackend)


def test_an_input_in_another_layout_is_restrided_not_misread():
    x = torch.randn(20, 30)
    c = compile_fn(lambda a: torch.exp(a) * 2, x)
    other = x.t().contiguous().t()  # same values, column-major
    assert other.stride() != x.stride()
    torch.testing.assert_close(c(other), torch.exp(x) * 2)


def test_persistent_candidates_hold_a_whole_row():
    c = compile_fn(lambda a: torch.softmax(a, -1), torch.randn(7, 700))
    kernel = next(iter(c.launchers.values())).kernel
    for interpret in (True, False):
        for cfg in candidate_configs(kernel, 7, 700, interpret):
            assert cfg["RBLOCK"] >= 700


def test_tuning_cache_keys_by_device_and_problem_size(tmp_path):
    kernel = next(iter(compile_fn(lambda a: a * 3, torch.randn(5)).launchers.values())).kernel
    cache = TuningCache(tmp_path)
    cache.put(kernel, "sm_90-H100", "x5-r1", {"XBLOCK": 256, "num_warps": 4})
    assert TuningCache(tmp_path).get(kernel, "sm_90-H100", "x5-r1") == {"XBLOCK": 256, "num_warps": 4}
    assert TuningCache(tmp_path).get(kernel, "gfx942-MI300X", "x5-r1") is None
    assert TuningCache(tmp_path).get(kernel, "sm_90-H100", "x6-r1") is None


def test_generated_sources_go_under_the_configured_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AGNOSTIC_RT_CACHE_DIR", str(tmp_path))
    b = KernelBuilder("cache_dir_probe")
    v = b.load(b.input("in0", "float32"), Var("x0"))
    # A constant no other test uses, so this kernel is new to the process-wide registry.
    mark = random.Random().random()
    b.store(b.output("out0", "float32"), Var("x0"), b.binary("add", v, b.const(mark, "float32"), "float32"))
    gk = register(emit_triton(b.build([b.size("n", 9)], [])))
    assert gk.path.parent == tmp_path / "kernels"
    assert gk.path.read_text() == gk.source


def test_debug_dir_receives_source_and_ir(tmp_path):
    x = torch.randn(6, 10)
    torch.compile(lambda a: torch.softmax(a, -1), backend="agnostic",
                  options={"target": "h100", "interpret": True, "debug_dir": str(tmp_path)})(x)
    sources = list(tmp_path.glob("kernels/agn_*.py"))
    assert sources and all(p.with_suffix(".ir.txt").exists() for p in sources)


def test_dynamic_shapes_share_one_kernel_source_across_batch_sizes(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="agnostic_rt.triton")
    fn = torch.compile(lambda a: torch.softmax(a * 2, -1), backend="agnostic", dynamic=True,
                       options={"target": "h100", "interpret": True, "debug_dir": str(tmp_path)})
    for rows in (3, 5, 9):
        x = torch.randn(rows, 8)
        torch.testing.assert_close(fn(x), torch.softmax(x * 2, -1))
    assert len(list(tmp_path.glob("kernels/agn_*.py"))) == 1
    assert not [r for r in caplog.records if "through ATen" in r.getMessage()]


def test_cudagraph_runner_steps_aside_for_cpu_inputs():
    from agnostic_rt.runtime.program import CudaGraphRunner

    c = compile_fn(lambda a: torch.exp(a) + 1, torch.randn(4, 5))
    runner = CudaGraphRunner(c.program)
    x = torch.randn(4, 5)
    torch.testing.assert_close(runner(x), torch.exp(x) + 1)
    assert runner.disabled and runner.graph is None


def _broadcast_kernel():
    """A kernel generated for an input broadcast along dim 1 (stride 0), and that input."""
    x = torch.randn(6, 1).expand(6, 9)
    c = compile_fn(lambda a, b: torch.exp(a) * b, x, torch.randn(6, 9))
    assert next(iter(c.launchers.values())).in_strides[0] == (1, 0)
    return c, x


def test_an_input_no_longer_broadcast_runs_through_aten_instead_of_raising(caplog):
    # Restriding a non-broadcast tensor into a stride-0 layout raised from copy_ ("more than one
    # element of the written-to tensor refers to a single memory location"), before the launcher's
    # fallback and on every call, so the user's model crashed.
    c, _ = _broadcast_kernel()
    caplog.set_level(logging.DEBUG, logger="agnostic_rt.triton_launch")
    a, b = torch.randn(6, 9), torch.randn(6, 9)
    for _ in range(2):
        torch.testing.assert_close(c(a, b), torch.exp(a) * b)
    assert [r for r in caplog.records if "runs through ATen" in r.getMessage()]
    assert not c.failed()  # only those calls: the kernel still serves layouts it can read


def test_a_differently_broadcast_input_still_runs_the_kernel(caplog):
    c, _ = _broadcast_kernel()
    caplog.set_level(logging.DEBUG, logger="agnostic_rt.triton_launch")
    col = torch.randn(1, 6).t()  # (6, 1) with strides (1, 6), broadcast to (6, 9): strides (1, 0)
    for a in (col.expand(6, 9), torch.randn(6, 1).expand(6, 9), torch.randn(1, 1).expand(6, 9)):
        b = torch.randn(6, 9)
        torch.testing.assert_close(c(a, b), torch.exp(a) * b)
    assert not [r for r in caplog.records if "runs through ATen" in r.getMessage()]


class _FakeCompiled:
    """What ``JITFunction.run`` returns on a GPU: a binary with its own runner (``binary[grid]``),
    taking every parameter in order, constexprs last. Runs the interpreted kernel so results are real."""

    def __init__(self, fn, names, calls, refuse=False):
        self.fn, self.names, self.calls, self.refuse = fn, names, calls, refuse

    def __getitem__(self, grid):
        def runner(*args):
            if self.refuse:
                raise TypeError("function takes exactly 4 arguments (5 given)")
            self.calls.append("direct")
            k = len(self.names)
            self.fn[grid](*args[:-k], **dict(zip(self.names, args[-k:])))
        return runner


class _FakeJit:
    def __init__(self, fn, names, refuse=False):
        self.fn, self.names, self.calls, self.refuse = fn, names, [], refuse

    def __getitem__(self, grid):
        def run(*args, num_warps=None, **consts):
            self.calls.append("jit")
            self.fn[grid](*args, **consts)
            return _FakeCompiled(self.fn, self.names, self.calls, self.refuse)
        return run


def _gpu_style_launcher(refuse=False, fn=lambda a: torch.exp(a) * 2, args=None):
    """A launcher as on a GPU (not interpreted), whose JIT and binary run the interpreted kernel."""
    from agnostic_rt.backends.triton.launch import KernelLauncher

    x = torch.randn(100)
    ln = next(iter(compile_fn(fn, *(args or (x,))).launchers.values()))
    gpu = KernelLauncher(ln.gk, ln.sizes, ln.in_strides, ln.out_specs, interpret=False, autotune=False,
                         fallback=ln.fallback, ops=ln.ops, device=torch.device("cpu"))
    gpu.fn = _FakeJit(ln.gk.function(interpret=True), ln.kernel.constexprs, refuse)
    return gpu, x


def test_after_the_first_launch_the_binary_is_launched_without_the_jit():
    gpu, x = _gpu_style_launcher()
    for _ in range(3):
        (out,) = gpu(x)
        torch.testing.assert_close(out, torch.exp(x) * 2)
    assert gpu.fn.calls == ["jit", "direct", "direct"]


def test_a_pointer_aligned_otherwise_than_the_binary_assumed_goes_through_the_jit():
    gpu, x = _gpu_style_launcher()
    gpu(x)
    shifted = torch.randn(101)[1:]  # 4 bytes past a 16-byte boundary: another specialisation
    assert shifted.data_ptr() % 16 != 0 and x.data_ptr() % 16 == 0
    (out,) = gpu(shifted)
    torch.testing.assert_close(out, torch.exp(shifted) * 2)
    gpu(x)
    assert gpu.fn.calls == ["jit", "jit", "direct"]


def test_steady_calls_restride_reuse_and_stay_direct():
    """The steady-state path (one stride and alignment test per input): an input in another layout
    is restrided by the general path and still launched by the binary; a donor from the memory plan
    is written into in place of a new allocation."""
    gpu, x = _gpu_style_launcher()
    gpu(x)
    assert gpu._fast is not None
    strided = torch.randn(100, 2)[:, 0]  # stride 2: copied into the generated layout
    (out,) = gpu(strided)
    torch.testing.assert_close(out, torch.exp(strided) * 2)
    donor = torch.empty(100)
    (out,) = gpu(x, reuse=(donor,))
    assert out.data_ptr() == donor.data_ptr()  # the donor's storage, reinterpreted
    torch.testing.assert_close(donor, torch.exp(x) * 2)
    assert gpu.fn.calls == ["jit", "direct", "direct"]


def test_a_kernel_that_adds_into_its_output_initialises_it_on_the_steady_path_too():
    # An embedding-style backward: zeros(8) then index_add of the values (atomic adds into the
    # launcher's filled output). Each call must start from zeros, also once launches are direct.
    def scatter(idx, v):
        return torch.zeros(8).index_add(0, idx, v * 2)
    idx, v = torch.tensor([1, 3, 1, 7, 0]), torch.randn(5)
    gpu, _ = _gpu_style_launcher(fn=scatter, args=(idx, v))
    assert gpu.kernel.ir.has_init
    for _ in range(3):
        (out,) = gpu(v, idx)  # the group's inputs, in its order
        torch.testing.assert_close(out, scatter(idx, v))
    assert gpu._fast is not None and gpu.fn.calls == ["jit", "direct", "direct"]


def test_a_runner_that_refuses_its_arguments_leaves_the_jit_launching(caplog):
    gpu, x = _gpu_style_launcher(refuse=True)
    for _ in range(3):
        (out,) = gpu(x)
        torch.testing.assert_close(out, torch.exp(x) * 2)
    assert gpu.fn.calls == ["jit", "jit", "jit"]
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


def test_direct_launch_can_be_turned_off(monkeypatch):
    from agnostic_rt.backends.triton import launch as triton_launch

    monkeypatch.setattr(triton_launch, "DIRECT_LAUNCH", False)
    gpu, x = _gpu_style_launcher()
    for _ in range(2):
        gpu(x)
    assert gpu.fn.calls == ["jit", "jit"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA or ROCm GPU")
def test_on_a_gpu_later_launches_go_through_the_binary_and_match_eager(monkeypatch):
    from agnostic_rt.backends.triton import launch as triton_launch

    direct = []
    real = triton_launch.KernelLauncher._direct_launch

    def counting(self, ins, outs):
        ok = real(self, ins, outs)
        direct.append(ok)
        return ok

    monkeypatch.setattr(triton_launch.KernelLauncher, "_direct_launch", counting)
    torch._dynamo.reset()
    fn = torch.compile(lambda a, b: torch.softmax(a * b + 1, -1).sum(0), backend="agnostic")
    a, b = torch.randn(300, 257, device="cuda"), torch.randn(257, device="cuda")
    for _ in range(3):
        torch.testing.assert_close(fn(a, b), torch.softmax(a * b + 1, -1).sum(0))
    torch._dynamo.reset()
    assert direct and all(direct), direct


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA or ROCm GPU")
def test_cudagraphs_capture_the_mlp_training_step_and_match_eager(caplog):
    """Captured on the second call, replayed on the third: gradients match eager's every step."""
    import copy

    from agnostic_rt.conformance.zoo import ZOO

    caplog.set_level(logging.INFO, logger="agnostic_rt.runtime.program")
    entry = ZOO["mlp"]
    model = entry.build().cuda()
    ref = copy.deepcopy(model)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="agnostic", options={"target": "cuda", "cudagraphs": True})
    inputs, target = entry.example(64)
    inputs, target = tuple(x.cuda() for x in inputs), target.cuda()
    for _ in range(3):
        for m, fn in ((model, compiled), (ref, ref)):
            m.zero_grad()
            entry.loss(fn(*inputs), target).backward()
        for p, q in zip(model.parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()
    assert [r for r in caplog.records if "captured a CUDA graph" in r.getMessage()]


def test_the_runner_gets_exactly_the_arguments_the_jit_binds():
    """What the JIT hands its binary's launcher (``bound_args.values()``) is what the direct launch
    passes: every parameter in order, constexprs last (checked with Triton's own binder, built for
    sm_90 without a GPU)."""
    jit = pytest.importorskip("triton.runtime.jit")
    if not hasattr(jit, "create_function_from_signature"):
        pytest.skip("this Triton builds its binder differently")
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    c = compile_fn(lambda a, b: torch.softmax(a * b, -1), torch.randn(7, 33), torch.randn(33))
    ln = next(iter(c.launchers.values()))
    fn = ln.gk.function(interpret=False)
    binder = jit.create_function_from_signature(fn.signature, fn.params, make_backend(GPUTarget("cuda", 90, 32)))
    ins, outs = [torch.randn(7, 33), torch.randn(33)], [torch.empty(7, 33)]
    cfg = candidate_configs(ln.kernel, ln.xnumel, ln.rnumel, interpret=False)[0]
    bound, _, _ = binder(*ins, *outs, *ln.sizes, **{k: cfg[k] for k in ln.kernel.constexprs})
    ours = (*ins, *outs, *ln.sizes, *(cfg[k] for k in ln.kernel.constexprs))
    assert len(bound) == len(ours)
    assert all(a is b if isinstance(b, torch.Tensor) else a == b for a, b in zip(bound.values(), ours))


def test_captured_outputs_in_an_input_are_remade_from_the_callers_argument_and_the_rest_cloned():
    """What CudaGraphRunner hands back after a replay (the plan itself needs no GPU): outputs living in
    a graph input's storage (a weight, its transpose saved for the backward, a slice of a batch copied
    into a static buffer) come from the caller's argument; outputs in the graph's pool are copies."""
    from agnostic_rt.runtime.program import output_plan, take_outputs

    w = torch.randn(4, 6)
    static_x = torch.randn(5, 6)  # the static copy a moved input is copied into before each replay
    pool = torch.randn(5, 4)  # a graph intermediate
    static_out = (pool, w, w.t(), static_x[1:], 3)
    plan = output_plan([w, static_x], static_out)
    assert [p and p[:2] for p in plan] == [None, ("input", 0), ("input", 0), ("input", 1), None]
    x = torch.randn(5, 6)
    static_x.copy_(x)
    got = take_outputs(plan, static_out, [w, x])
    assert got[0] is not pool and torch.equal(got[0], pool)
    assert got[1] is w
    assert got[2].untyped_storage().data_ptr() == w.untyped_storage().data_ptr() and torch.equal(got[2], w.t())
    assert got[3].untyped_storage().data_ptr() == x.untyped_storage().data_ptr() and torch.equal(got[3], x[1:])
    assert got[4] == 3
    # An argument laid out unlike the static copy: the graph's own values are copied out instead.
    xt = torch.randn(6, 5).t()
    static_x.copy_(xt)
    got = take_outputs(plan, static_out, [w, xt])
    assert got[3].untyped_storage().data_ptr() != xt.untyped_storage().data_ptr() and torch.equal(got[3], xt[1:])


def test_an_empty_group_only_allocates_its_outputs():
    """A group over zero elements (gpt2's backward has several) launches nothing; after its first call
    it skips fitting inputs too."""
    gpu, _ = _gpu_style_launcher()
    empty = KernelLauncher(gpu.gk, [0], gpu.in_strides, [((0,), (1,), torch.float32)], interpret=False,
                           autotune=False, fallback=gpu.fallback, ops=gpu.ops, device=torch.device("cpu"))
    x = torch.randn(0)
    for _ in range(2):
        (out,) = empty(x)
        assert out.shape == (0,) and out.dtype == torch.float32
    assert empty._fast is not None and empty._launch is None


class _FakeBinary:
    """The parts of a CompiledKernel bare_runner uses: a C launcher recording its arguments."""

    def __init__(self):
        self.calls, self.function, self.packed_metadata = [], 1234, ("meta",)

    def _init_handles(self):
        self.run = lambda *args: self.calls.append(args)

    def launch_metadata(self, grid, stream, *args):
        return None


def test_the_bare_runner_calls_the_c_launcher_as_inductor_does(monkeypatch):
    from agnostic_rt.backends.triton.launch import bare_runner

    binary = _FakeBinary()
    assert bare_runner(binary, (7,), torch.device("cpu")) is None  # only on a GPU
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 1000 + index, raising=False)
    run = bare_runner(binary, (7,), torch.device("cuda", 1))
    run("x", "out", 100, 64)
    # grid, the device's raw stream, function, packed metadata, no launch metadata or hooks, args
    assert binary.calls == [(7, 1, 1, 1001, 1234, ("meta",), None, None, None, "x", "out", 100, 64)]


def test_the_bare_runner_steps_aside_while_a_launch_hook_is_installed(monkeypatch):
    from triton import knobs

    from agnostic_rt.backends.triton.launch import bare_runner

    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: 0, raising=False)
    monkeypatch.setattr(knobs.runtime, "launch_enter_hook", lambda *a: None)
    assert bare_runner(_FakeBinary(), (1,), torch.device("cuda", 0)) is None


def test_fallback_outputs_come_in_the_recorded_layout_at_their_storages_start():
    """Readers trust a kernel's outputs unchecked (layouts.trust_layouts), so an ATen fallback that
    picks another layout, or returns a view into the middle of a storage, is copied into the layout
    the kernel would have made."""
    from agnostic_rt.backends.triton.launch import fallback_outputs

    x = torch.randn(6, 8)
    specs = [((8, 6), (6, 1), torch.float32), ((4, 8), (8, 1), torch.float32), ((6, 8), (8, 1), torch.float32)]
    outs = fallback_outputs(lambda t: (t.t() * 1, (t * 2)[2:], t + 1), [x], specs)
    for out, (shape, stride, dtype), want in zip(outs, specs, (x.t(), (x * 2)[2:], x + 1)):
        assert out.dtype == dtype and out.shape == shape and out.stride() == stride and out.storage_offset() == 0
        assert out.data_ptr() % 16 == 0
        torch.testing.assert_close(out, want)


def test_a_fallback_output_sharing_storage_is_copied_in_its_recorded_non_dense_layout():
    from agnostic_rt.backends.triton.launch import fallback_outputs

    x = torch.randn(6, 8)
    specs = [((6, 8), (8, 1), torch.float32), ((6, 3), (8, 1), torch.float32)]
    outs = fallback_outputs(lambda t: ((e := torch.exp(t)), e[:, :3]), [x], specs)
    assert outs[1].stride() == (8, 1) and outs[1].storage_offset() == 0
    assert outs[0].untyped_storage().data_ptr() != outs[1].untyped_storage().data_ptr()
    torch.testing.assert_close(outs[1], torch.exp(x)[:, :3])


def test_trust_after_an_empty_groups_first_call_keeps_it_allocating(caplog):
    ln = next(iter(compile_fn(lambda x: torch.exp(x) * 2, torch.randn(0, 4)).launchers.values()))
    ln(torch.randn(0, 4))
    allocate_only = ln._fast
    ln.trust([True], [])
    with caplog.at_level(logging.WARNING):
        (out,) = ln(torch.randn(0, 4))
    assert out.shape == (0, 4) and ln._fast is allocate_only and not caplog.records


def test_trusted_inputs_and_donors_skip_their_checks():
    gpu, x = _gpu_style_launcher()
    gpu.trust([True], [True])
    gpu(x)
    code = gpu._fast.__code__
    assert "stride" not in code.co_names and "output_in" not in code.co_names and "reinterpret" in code.co_names
    donor = torch.empty(100)
    (out,) = gpu(x, reuse=(donor,))
    assert out.data_ptr() == donor.data_ptr()
    torch.testing.assert_close(out, torch.exp(x) * 2)
    untrusted, x = _gpu_style_launcher()
    untrusted(x)
    assert "stride" in untrusted._fast.__code__.co_names and "output_in" in untrusted._fast.__code__.co_names
    assert gpu.fn.calls == ["jit", "direct"]
