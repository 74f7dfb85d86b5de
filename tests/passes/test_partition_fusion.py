"""The fusion partitioner: what fuses, what goes to the library, what falls back, and the DAG rule."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from kernel_harness import compile_fn
from torch.fx.experimental.proxy_tensor import make_fx

from agnostic_rt.decomp import decompositions_for
from agnostic_rt.passes.partitioner import ATEN, KERNEL, LIBRARY, _is_acyclic, coverage, partition
from agnostic_rt.runtime.program import build_program
from agnostic_rt.targets import get_target

H100 = get_target("h100").with_device("cpu")


def _groups(fn, *args, target=H100):
    gm = make_fx(fn, decomposition_table=decompositions_for(target))(*args)
    return gm, partition(gm, target)


def _kinds(groups):
    return [g.kind for g in groups]


def test_cpu_target_keeps_one_aten_group_per_node():
    cpu = get_target("cpu")
    gm, groups = _groups(lambda a: torch.softmax(a, -1) * 2, torch.randn(4, 8), target=cpu)
    calls = [n for n in gm.graph.nodes if n.op == "call_function"]
    assert len(groups) == len(calls)
    assert all(len(g.nodes) == 1 and g.kind in (ATEN, LIBRARY) for g in groups)


def test_gelu_bias_layer_norm_fuse_into_one_kernel():
    x, b = torch.randn(8, 64), torch.randn(64)
    w, beta = torch.randn(64), torch.randn(64)
    _, groups = _groups(lambda a, b_, w_, be: F.layer_norm(F.gelu(a + b_), (64,), w_, be), x, b, w, beta)
    assert _kinds(groups).count(KERNEL) == 1


def test_sibling_chains_of_one_space_fuse_into_one_kernel():
    # Two chains from the same inputs meeting at a mul: one kernel, not a producer kernel per chain.
    x, w = torch.randn(1000), torch.randn(1000)
    _, groups = _groups(lambda a, b: F.gelu(a * b + 1.0) * torch.sigmoid(a), x, w)
    assert _kinds(groups).count(KERNEL) == 1


def test_siblings_joined_through_a_library_call_stay_apart():
    # sigmoid(x) feeds both a matmul and the final add; merging it with the matmul's epilogue would
    # make the kernel depend on itself through the library call.
    x, w = torch.randn(16, 16), torch.randn(16, 16)
    gm, groups = _groups(lambda a, b: torch.relu(torch.sigmoid(a) @ b) + torch.sigmoid(a), x, w)
    assert _is_acyclic(groups)
    assert _kinds(groups).count(KERNEL) == 2


def test_matmul_goes_to_the_library_and_its_epilogue_is_a_kernel():
    x, w = torch.randn(8, 16), torch.randn(16, 32)
    _, groups = _groups(lambda a, b: torch.relu(a @ b) * 2, x, w)
    assert [g.kind for g in groups if g.kind != ATEN] == [LIBRARY, KERNEL]


def test_random_ops_fall_back_to_aten():
    _, groups = _groups(lambda a: torch.rand_like(a) + a, torch.randn(4, 4))
    rand = [g for g in groups if "rand" in str(g.nodes[0].target)]
    assert rand and all(g.kind == ATEN for g in rand)


def test_reductions_over_different_rows_are_separate_kernels():
    # Row sums (x = 16 rows) then a column sum (x = 32 columns): two iteration spaces.
    _, groups = _groups(lambda a: (a - a.sum(1, keepdim=True)).sum(0), torch.randn(16, 32))
    assert _kinds(groups).count(KERNEL) == 2


def test_a_fusion_that_would_make_a_cycle_is_refused():
    # k = exp(a) ; m = mm(k, w) (library) ; out = k + m would need the kernel both before and after
    # the matmul: the add must not join exp's group.
    def fn(a, w):
        k = torch.exp(a)
        return k + k @ w
    _, groups = _groups(fn, torch.randn(8, 8), torch.randn(8, 8))
    kernels = [g for g in groups if g.kind == KERNEL]
    assert len(kernels) == 2


def test_a_cycle_through_another_group_is_refused():
    # g = {exp(p), c = a + b} depends on h = {b = sin(x)}; d = b * a tries h first, which would make
    # h depend on g too: only a group-level path (h -> c in g) shows it.
    def fn(p, q):
        a = p.exp()
        b = (q @ q).sin()
        c = a + b
        d = b * a
        return c, d
    p, q = torch.randn(6, 6), torch.randn(6, 6)
    _, groups = _groups(fn, p, q)
    assert _is_acyclic(groups) and KERNEL in _kinds(groups)
    c = compile_fn(fn, p, q)
    for got, want in zip(c(p, q), fn(p, q)):
        torch.testing.assert_close(got, want)


def test_a_row_result_read_through_a_reshape_fuses_at_large_sizes():
    # mean over rows of [B*S, H], viewed as [B, S, 1] and subtracted from the [B, S, H] view: the
    # row index is a div/mod expression that must simplify back to the row (2M points: too many
    # to compare one by one).
    B, S, H = 16, 256, 512

    def fn(a):
        return a.view(B, S, H) - a.mean(-1, keepdim=True).view(B, S, 1)
    _, groups = _groups(fn, torch.randn(B * S, H))
    assert _kinds(groups).count(KERNEL) == 1


def test_group_outputs_are_exactly_the_values_read_outside():
    gm, groups = _groups(lambda a: (torch.exp(a) * 2, torch.exp(a).sum(1)), torch.randn(8, 16))
    for g in groups:
        if g.kind != KERNEL:
            continue
        inside = set(g.nodes)
        for n in g.nodes:
            assert (n in g.outputs) == any(u not in inside for u in n.users)


def test_program_runs_a_kernel_after_a_node_between_its_members():
    # A group {a, c} with an outside node b between them in graph order that reads a's output:
    # build_program must place the kernel call before b (topological, not positional).
    def fn(x):
        a = torch.exp(x)
        b = a @ a  # library, reads a
        c = a * 3  # joins a's group, after b in graph order
        return b, c
    c = compile_fn(fn, torch.randn(6, 6))
    got = c(torch.ones(6, 6))
    want = fn(torch.ones(6, 6))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_coverage_counts_generated_views_and_fallbacks():
    gm, groups = _groups(lambda a: (torch.rand_like(a) + a.exp()).t(), torch.randn(4, 4))
    report = coverage(groups)
    assert (report["generated"], report["fallback"], report["views"]) == (2, 1, 1)
    assert report["fallback_ops"] == {"aten.rand_like.default": 1}


def test_a_kernel_group_without_a_launcher_counts_as_fallback():
    gm, groups = _groups(lambda a: (torch.rand_like(a) + a.exp()).t(), torch.randn(4, 4))
    program = build_program(gm, groups, {})
    assert program.meta["agnostic_stats"].coverage["fallback"] == 3


def _loss_tail(a):
    # Reductions of 0-d values, as a loss head produces them (sum/mean/amax/softmax of a scalar).
    s = a.sum()
    return (s * 2).sum() + torch.softmax(s, 0) + s.exp().mean() + s.amax() + a[1, 2].sum()


def test_reductions_of_a_0d_tensor_fuse_without_a_lowering_failure(caplog):
    # A 0-d source reduces over one implicit dim of extent 1; before, the kernel held a reduce op and
    # no r loop, KernelIR.verify raised and the partitioner logged "trial lowering failed".
    caplog.set_level(logging.DEBUG, logger="agnostic_rt.partition")
    a = torch.randn(4, 3)
    _, groups = _groups(_loss_tail, a)
    assert not [r for r in caplog.records if "trial lowering failed" in r.getMessage()]
    assert coverage(groups)["fallback"] == 0


def test_reductions_of_a_0d_tensor_match_eager_under_the_interpreter():
    a = torch.randn(4, 3)
    c = compile_fn(_loss_tail, a)
    assert not c.failed()
    torch.testing.assert_close(c(a), _loss_tail(a))


def test_a_slice_with_symbolic_bounds_fuses_under_dynamic_shapes(caplog):
    # dynamic=True: the slice's end is a SymInt node (GPT-2's attention mask slice); it read as a
    # "trial lowering failed" TypeError before, and the slice ran through ATen.
    caplog.set_level(logging.WARNING, logger="agnostic_rt")

    def fn(x, y):
        return (x[:, : y.shape[0]] * 2).exp()

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="agnostic", dynamic=True, options={"target": "h100", "interpret": True})
    for n in (5, 7):
        x, y = torch.randn(3, 9), torch.randn(n)
        torch.testing.assert_close(compiled(x, y), fn(x, y))
    torch._dynamo.reset()
    assert not [r.getMessage() for r in caplog.records if "trial lowering failed" in r.getMessage()]


# -- producers folded into the kernel that reads them, and horizontal fusion

def _kernel_count(fn, *args) -> int:
    _, groups = _groups(fn, *args)
    assert _is_acyclic(groups)
    return _kinds(groups).count(KERNEL)


def _matches_eager(fn, *args):
    got, want = compile_fn(fn, *args)(*args), fn(*args)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(g, w)


def test_a_scalar_producer_folds_into_the_kernel_that_reads_it():
    # ReLU's backward: where(x <= 0, 0-d zero, grad) and its column sum; the 0-d constant was a
    # kernel launch of its own.
    def fn(a, g):
        return torch.where(a <= 0, torch.zeros(()), g).sum(0)
    a, g = torch.randn(4, 32), torch.randn(4, 32)
    assert _kernel_count(fn, a, g) == 1
    _matches_eager(fn, a, g)


def test_a_per_row_producer_folds_into_the_row_reduction():
    # r / 256 is one value per row: placed first, it was a kernel of its own; once the mul's group
    # becomes a row reduction it fits there.
    def fn(a, r):
        return (a * (r / 256.0)).sum(1)
    a, r = torch.randn(8, 256), torch.randn(8, 1)
    assert _kernel_count(fn, a, r) == 1
    _matches_eager(fn, a, r)


def test_independent_reductions_of_one_space_fuse_horizontally():
    def fn(a, b):
        return a.sum(0), (b * 2).sum(0)
    a, b = torch.randn(4, 32), torch.randn(4, 32)
    assert _kernel_count(fn, a, b) == 1
    _matches_eager(fn, a, b)


def test_no_horizontal_fusion_when_a_reader_of_the_first_would_wait():
    # The matmul reads the first sum before the second: fusing would make it wait for the second.
    def fn(a, b, w):
        m = a.sum(0, keepdim=True) @ w
        return m, b.sum(0, keepdim=True)
    a, b, w = torch.randn(4, 16), torch.randn(4, 16), torch.randn(16, 16)
    assert _kernel_count(fn, a, b, w) == 2
    _matches_eager(fn, a, b, w)


def test_no_horizontal_fusion_of_groups_far_apart():
    from agnostic_rt.passes.partitioner import HORIZONTAL_WINDOW

    def fn(a, b, w):
        s = a.sum(0)
        for _ in range(HORIZONTAL_WINDOW + 1):
            b = b @ w  # library calls between the two sums
        return s, b.sum(0)
    a, b, w = torch.randn(4, 16), torch.randn(4, 16), torch.randn(16, 16)
    assert _kernel_count(fn, a, b, w) == 2


def test_no_horizontal_fusion_that_raises_the_peak_of_live_bytes():
    # Fusing the two column sums would keep the first product alive until the second exists,
    # which is then the graph's peak (both products at once instead of one at a time).
    def fn(a, b, w):
        s = (a @ w).sum(0)
        return s, (b @ w).sum(0)
    a, b, w = torch.randn(4, 64), torch.randn(4, 64), torch.randn(64, 4096)
    assert _kernel_count(fn, a, b, w) == 2
    _matches_eager(fn, a, b, w)


def test_horizontal_fusion_keeps_the_memory_plans_peak_on_gpt2_training(monkeypatch):
    # GPT-2's backward is where an estimate from graph positions alone let the peak rise 10%
    # (a kernel runs at its last node; what reads a view of its output waits for it).
    import importlib

    import bench_scripts

    part = importlib.import_module("agnostic_rt.passes.partitioner")  # the package exports the function

    plans = bench_scripts.load("memory_plan").plans
    merged = []
    horizontal = part.FusionPartitioner.merge_horizontal

    def counted(self):
        before = len(self.members)
        horizontal(self)
        merged.append(before - len(self.members))

    monkeypatch.setattr(part.FusionPartitioner, "merge_horizontal", counted)
    fused = dict(plans("gpt2", True, "h100", 2))
    assert sum(merged) > 0  # it did fuse
    monkeypatch.setattr(part, "HORIZONTAL_WINDOW", -1)  # no horizontal fusion
    apart = dict(plans("gpt2", True, "h100", 2))
    assert fused.keys() == apart.keys() == {"forward", "backward"}
    for kind in fused:
        assert fused[kind]["peak_bytes_before"] <= apart[kind]["peak_bytes_before"], kind


def test_a_gather_read_broadcast_folds_into_the_kernel_that_reads_it():
    # Token plus position embeddings: the [1, S, H] position gather is re-gathered at every batch
    # element (the same loads) instead of a launch of its own.
    def fn(tok, pos, wte, wpe):
        return F.layer_norm(F.embedding(tok, wte) + F.embedding(pos, wpe), (32,))
    tok, pos = torch.randint(0, 50, (4, 16)), torch.arange(16).unsqueeze(0)
    wte, wpe = torch.randn(50, 32), torch.randn(16, 32)
    assert _kernel_count(fn, tok, pos, wte, wpe) == 1
    _matches_eager(fn, tok, pos, wte, wpe)


def test_a_computed_producer_read_broadcast_is_recomputed_only_a_few_times():
    from agnostic_rt.passes.partitioner import BROADCAST_RECOMPUTE

    def fn(a, b):
        return a * torch.exp(b)
    b = torch.randn(1, 32)
    few, many = torch.randn(BROADCAST_RECOMPUTE, 32), torch.randn(BROADCAST_RECOMPUTE + 1, 32)
    # exp(b) has 32 values read at 16 x 32 points: recomputed 16 times each; at 17 x 32, stored.
    assert _kernel_count(fn, few, b) == 1
    assert _kernel_count(fn, many, b) == 2
    _matches_eager(fn, few, b)
    _matches_eager(fn, many, b)


def test_horizontal_fusion_under_dynamic_shapes_neither_fails_nor_recompiles(caplog):
    # Symbolic sizes read as their hints in the stored-bytes estimate: no guard on a size, so a
    # second batch size runs the same compile.
    caplog.set_level(logging.WARNING, logger="agnostic_rt")

    def fn(a, b):
        return torch.relu(a).sum(0), (b * 2).sum(0)

    torch._dynamo.reset()
    counts = torch._dynamo.utils.counters
    counts.clear()
    compiled = torch.compile(fn, backend="agnostic", dynamic=True, options={"target": "h100", "interpret": True})
    for n in (5, 7):
        a, b = torch.randn(n, 16), torch.randn(n, 16)
        for got, want in zip(compiled(a, b), fn(a, b)):
            torch.testing.assert_close(got, want)
    assert counts["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()
    assert not [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]


def _view_outputs(groups) -> list:
    """Kernel outputs that are views of a value computed outside their group (stored copies)."""
    from agnostic_rt.backends.lowering.lower import VIEW_OPS
    from agnostic_rt.passes.partitioner import packet_of

    found = []
    for g in groups:
        inside = set(g.nodes)
        for out in g.outputs if g.kind == KERNEL else ():
            n = out
            while n in inside and packet_of(n) in VIEW_OPS:
                n = n.all_input_nodes[0]
            if n is not out and n not in inside:
                found.append(out)
    return found


def test_a_view_of_an_outside_value_read_inside_and_outside_is_not_stored():
    # GPT-2's KV cache: the key's permute is read by the cat in a kernel and outside it (by
    # attention there; here it is a graph output). The kernel stored a copy of the permute; now
    # the output is an ATen view of the library result, as traced, and the kernel writes only the cat.
    def fn(x, w):
        k = (x @ w).view(4, 8, 2).permute(1, 0, 2)
        return torch.cat([torch.zeros(0, 4, 2), k], 0) * 2, k
    x, w = torch.randn(4, 16), torch.randn(16, 16)
    gm, groups = _groups(fn, x, w)
    assert _view_outputs(groups) == []
    cat = next(g for g in groups if any(n.target == torch.ops.aten.cat.default for n in g.nodes))
    assert [n.target for n in cat.outputs] == [torch.ops.aten.mul.Tensor]
    _matches_eager(fn, x, w)


def test_a_view_chain_read_outside_through_a_dead_view_leaves_no_output():
    # The outside reader of an inner view moves to an ATen copy of the chain; the in-group view it
    # read through is then dead and must not keep its source a kernel output.
    def fn(x, w, w2):
        y = (x @ w).view(8, 8)
        return y.sum(0), y.t() @ w2
    x, w, w2 = torch.randn(4, 16), torch.randn(16, 16), torch.randn(8, 8)
    gm, groups = _groups(fn, x, w, w2)
    assert _view_outputs(groups) == []
    _matches_eager(fn, x, w, w2)


def test_an_empty_producer_folds_into_the_kernel_that_reads_it():
    # HF's empty KV cache: cat([empty, k]). The empty tensor's group launched nothing but was still
    # a launcher call per step; it now joins the cat's kernel (which never loads from it).
    def fn(a):
        return torch.cat([torch.zeros(0, 8), a * 2], 0) + 1
    a = torch.randn(4, 8)
    assert _kernel_count(fn, a) == 1
    _matches_eager(fn, a)
