"""FX <-> e-graph.

Loading: every FX node becomes an e-node (ATen arguments normalised to the schema; identical pure
nodes land in one class, which is common-subexpression elimination for free). Placeholders and
attributes are leaves; impure nodes (random, mutating, collective, opaque) and data-dependent ones
(``.item()``, ``nonzero``: each binds its own unbacked sizes) become :class:`Barrier` e-nodes that no
rule can match and no hashcons can merge.

Emitting: placeholders first, in their original order; then the extraction's choices, depth first
from a root sequence that keeps every impure node in place relative to the others -- effectful
barriers (random ops) in their original order, then the graph outputs, then the mutating barriers
(the ``copy_`` epilogue aot_autograd writes for input mutations), which therefore run after every
read of the tensors they write. Each emitted node is re-run on fake values: that fills ``meta["val"]``
and catches a ``view`` whose input is no longer viewable (it is emitted as ``reshape`` instead).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode

from .analysis import EData, TensorAnalysis, fake_mode_of, real_values
from .egraph import Barrier, EGraph, ENode
from .ops import (
    denormalize,
    fill_template,
    is_data_dependent,
    is_impure_op,
    is_mutating,
    normalize,
    to_template,
)

log = logging.getLogger("agnostic_rt.fx_bridge")
aten = torch.ops.aten
prims = torch.ops.prims


class Unsupported(Exception):
    """A graph the optimiser leaves alone (the reason says why)."""


@dataclass(frozen=True)
class Leaf:
    """The op of a placeholder or attribute e-node."""

    kind: str  # "placeholder" | "get_attr"
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class OutputOf:
    """The graph output of e-class ``cid``, as a class of its own in an extraction problem.

    An output keeps its top node (see :meth:`FxEGraph.pinned_roots`); when a rewrite made that node
    read its own class -- ``x = cat([empty(0), x])``, where cat(...) is the output -- the pinned class
    cannot be computed. The output then becomes this separate class holding only the pinned node,
    while the class itself keeps all its nodes for the node's inputs and every other user.
    """

    cid: int


class FxEGraph:
    """One FX graph loaded into an e-graph, and the way back out.

    >>> fg = FxEGraph(gm)            # doctest: +SKIP
    >>> gm2 = fg.to_fx(choice)       # choice: class id -> ENode, from an Extractor
    """

    def __init__(self, gm: fx.GraphModule, params: set[str] | None = None):
        self.gm = gm
        vals = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
        fake_mode = fake_mode_of([v for v in vals if v is not None])
        if fake_mode is None or any(v is None for v in vals):
            raise Unsupported("placeholders carry no fake values (meta['val'])")
        self.fake_mode: FakeTensorMode = fake_mode
        self.analysis = TensorAnalysis(fake_mode)
        self.eg = EGraph(self.analysis.make, self.analysis.merge)
        self.params = params or set()
        self.node_class: dict[fx.Node, int] = {}
        self.origin: dict[ENode, fx.Node] = {}  # e-nodes that came from the graph -> their FX node
        self.original_nodes: list[ENode] = []
        self.fx_enode: dict[fx.Node, ENode] = {}
        self.placeholders: list[fx.Node] = []
        self.barriers: list[tuple[Barrier, int]] = []
        self.output_node: fx.Node | None = None
        self.output_template: Any = None
        self.roots: list[int] = []
        self.output_fx_nodes: list[fx.Node] = []
        self._load()

    # -- FX -> e-graph ----------------------------------------------------------------------------
    def _load(self) -> None:
        for uid, node in enumerate(self.gm.graph.nodes):
            if node.op == "output":
                children: list[fx.Node] = []
                self.output_template = to_template(node.args[0], _is_node, children)
                self.roots = [self.node_class[c] for c in children]
                self.output_fx_nodes = children
                self.output_node = node
                continue
            enode, data = self._enode_for(uid, node)
            if data is not None:
                self.analysis.leaf_data[enode] = data
            elif "val" in node.meta:
                self.analysis.known_vals[self.eg.canonical(enode)] = node.meta["val"]
            cid = self.eg.add(enode)
            enode = self.eg.canonical(enode)
            self.node_class[node] = cid
            self.origin.setdefault(enode, node)
            self.fx_enode[node] = enode
            self.original_nodes.append(enode)
            if isinstance(enode.op, Barrier):
                self.barriers.append((enode.op, cid))
        for barrier, cid in self.barriers:
            fx_node = self.origin[self.eg[cid].nodes[0]]
            if barrier.mutates and fx_node.users:
                raise Unsupported(f"mutation {fx_node.format_node()} has users; only a mutation epilogue is supported")

    def _enode_for(self, uid: int, node: fx.Node) -> tuple[ENode, EData | None]:
        if node.op == "placeholder":
            self.placeholders.append(node)
            kind = "param" if node.target in self.params else "input"
            return ENode(Leaf("placeholder", node.target), (), ()), EData(val=node.meta["val"], leaf=kind)
        if node.op == "get_attr":
            value = _get_attr(self.gm, node.target)
            if isinstance(value, torch.Tensor):
                fake = self.fake_mode.from_tensor(value, static_shapes=True)
                with real_values():  # the caller may be inside a FakeTensorMode (aot_autograd is)
                    const = value.item() if value.numel() == 1 and not value.is_meta else None
                data = EData(val=fake, const=const, leaf="constant")
            else:
                data = EData(val=value, leaf="constant")
            return ENode(Leaf("get_attr", node.target), (), ()), data
        if node.op != "call_function":
            raise Unsupported(f"{node.op} node {node.name} (only ATen call_function graphs are optimised)")
        children: list[fx.Node] = []
        full = normalize(node.target, node.args, node.kwargs)
        template = to_template(full, _is_node, children)
        child_ids = tuple(self.node_class[c] for c in children)
        op = node.target
        try:
            hash(template)
            impure = is_impure_op(op, full)
        except TypeError:  # an argument we cannot hash (e.g. a tensor constant): keep the node opaque
            template, impure = ("__opaque__", uid), True
        if is_data_dependent(op):
            if "val" not in node.meta:
                raise Unsupported(f"data-dependent {node.format_node()} has no recorded value (meta['val'])")
            impure = True
        if impure or node.is_impure():
            op = Barrier(op, uid, mutates=is_mutating(node.target))
            if template[:1] == ("__opaque__",):
                return ENode(op, child_ids, template), EData(val=node.meta.get("val"), pure=False)
        return ENode(op, child_ids, template), None

    # -- e-graph -> FX ----------------------------------------------------------------------------
    def root_sequence(self) -> list[int]:
        """Roots in emission order: effectful barriers, outputs, mutating barriers."""
        effects = [cid for b, cid in sorted(self.barriers, key=lambda bc: bc[0].uid) if not b.mutates]
        mutations = [cid for b, cid in sorted(self.barriers, key=lambda bc: bc[0].uid) if b.mutates]
        return effects + list(self.roots) + mutations

    def to_fx(self, choice: dict[int | OutputOf, ENode]) -> fx.GraphModule:
        """A new GraphModule computing the outputs from the chosen e-node of each class (an output
        with an :class:`OutputOf` entry is computed by that e-node instead of its class's choice)."""
        eg = self.eg
        graph = fx.Graph()
        env: dict[int, fx.Node] = {}
        for ph in self.placeholders:
            new = graph.placeholder(ph.target, type_expr=ph.type)
            new.meta = dict(ph.meta)
            env[eg.find(self.node_class[ph])] = new
        outputs: dict[int, fx.Node] = {}
        for root in self.root_sequence():
            root = eg.find(root)
            top = choice.get(OutputOf(root))
            if top is None or top == choice.get(root):
                self._emit(graph, root, choice, env)
                outputs[root] = env[root]
            elif root not in outputs:
                for child in top.children:
                    self._emit(graph, eg.find(child), choice, env)
                outputs[root] = self._emit_node(graph, top, [env[eg.find(c)] for c in top.children])
        out_vals = [outputs[eg.find(r)] for r in self.roots]
        out_vals = self._match_output_strides(graph, out_vals)
        graph.output(fill_template(self.output_template, out_vals, as_list=False))
        if self.output_node is not None:
            graph.output_node().meta = dict(self.output_node.meta)
        gm = fx.GraphModule(self.gm, graph)
        gm.meta = dict(getattr(self.gm, "meta", {}))
        return gm

    def _emit(self, graph: fx.Graph, root: int, choice: dict[int, ENode], env: dict[int, fx.Node]) -> None:
        eg = self.eg
        stack: list[tuple[int, bool]] = [(root, False)]
        while stack:  # iterative post-order: graphs are deeper than Python's recursion limit
            cid, expanded = stack.pop()
            cid = eg.find(cid)
            if cid in env:
                continue
            node = choice[cid]
            if not expanded:
                stack.append((cid, True))
                stack.extend((c, False) for c in reversed(node.children) if eg.find(c) not in env)
                continue
            env[cid] = self._emit_node(graph, node, [env[eg.find(c)] for c in node.children])

    def _emit_node(self, graph: fx.Graph, enode: ENode, inputs: list[fx.Node]) -> fx.Node:
        op = enode.op.op if isinstance(enode.op, Barrier) else enode.op
        origin = self.origin.get(enode)
        if isinstance(op, Leaf):  # a get_attr (placeholders are already in env)
            new = graph.get_attr(op.name)
            new.meta = dict(origin.meta) if origin is not None else {}
            return new
        full = fill_template(enode.template, inputs)
        args, kwargs = denormalize(op, tuple(full))
        args = _trim_defaults(op, args)
        faithful = False
        if origin is not None and "val" in origin.meta:
            orig_inputs: list[fx.Node] = []
            to_template(normalize(origin.target, origin.args, origin.kwargs), _is_node, orig_inputs)
            faithful = len(orig_inputs) == len(inputs) and all(
                _same_layout(i.meta.get("val"), o.meta.get("val")) for i, o in zip(inputs, orig_inputs))
        # A node rebuilt over its original inputs has its original value; anything else is re-run on
        # fake values, which also checks it (a view whose input is no longer viewable fails here).
        # A data-dependent op keeps its value: a re-run would bind new unbacked symbols.
        keep = faithful or (origin is not None and "val" in origin.meta and is_data_dependent(op))
        val = origin.meta["val"] if keep else self._fake_run(op, args, kwargs)
        if val is _FAILED and op in (aten.view.default, aten._unsafe_view.default):
            op = aten.reshape.default  # the input's layout changed; reshape copies only when it must
            val = self._fake_run(op, args, kwargs)
        if val is _FAILED:
            raise RuntimeError(f"emitting {op} failed on fake values")
        new = graph.call_function(op, args, kwargs)
        if origin is not None:
            new.meta = {k: v for k, v in origin.meta.items() if k != "val"}
            new.name = graph._graph_namespace.create_name(origin.name, new)
        new.meta["val"] = val
        return new

    def _fake_run(self, op: Any, args: tuple, kwargs: dict) -> Any:
        def val(x):
            return x.meta["val"] if isinstance(x, fx.Node) else x

        fargs = torch.fx.node.map_aggregate(args, val)
        fkwargs = torch.fx.node.map_aggregate(kwargs, val)
        try:
            with self.fake_mode:
                return op(*fargs, **fkwargs)
        except Exception as e:
            log.debug("fake run of %s failed: %s", op, e)
            return _FAILED

    def _match_output_strides(self, graph: fx.Graph, outs: list[fx.Node]) -> list[fx.Node]:
        """Outputs keep their original strides: the backward (or the caller) was traced with them."""
        fixed = []
        for orig, new in zip(self.output_fx_nodes, outs):
            want, got = (orig.meta.get("val") if orig is not None else None), new.meta.get("val")
            if isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor) and new.op != "placeholder":
                if not _same_strides(want, got):
                    stride = list(want.stride())
                    if not all(isinstance(s, int) for s in stride):
                        raise RuntimeError(f"output {orig.name}: strides changed and are symbolic")
                    copy = graph.call_function(prims.copy_strided.default, (new, stride))
                    copy.meta["val"] = self._fake_run(prims.copy_strided.default, (new, stride), {})
                    new = copy
            fixed.append(new)
        return fixed

    def pinned_roots(self) -> dict[int, ENode]:
        """Class -> e-node every extraction must choose: outputs keep their top node (aot_autograd
        recorded whether each output is fresh or an alias), barriers keep themselves."""
        eg = self.eg
        pins: dict[int, ENode] = {}
        for fx_node in self.output_fx_nodes:
            cid = eg.find(self.node_class[fx_node])
            enode = self.fx_enode.get(fx_node)
            if enode is not None:
                pins.setdefault(cid, eg.canonical(enode))
        for barrier, cid in self.barriers:
            cid = eg.find(cid)
            for enode in eg[cid].nodes:
                if enode.op == barrier:
                    pins[cid] = enode
        for ph in self.placeholders:
            cid = eg.find(self.node_class[ph])
            pins[cid] = eg.canonical(ENode(Leaf("placeholder", ph.target), (), ()))
        return pins


_FAILED = object()


def _is_node(x: Any) -> bool:
    return isinstance(x, fx.Node)


def _get_attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _same_dim(x: Any, y: Any) -> bool:
    if x is y:
        return True
    if isinstance(x, torch.SymInt) and isinstance(y, torch.SymInt):
        return x.node.expr == y.node.expr  # structural: cheap, and never adds a guard
    return isinstance(x, int) and isinstance(y, int) and x == y


def _same_layout(a: Any, b: Any) -> bool:
    """Same value metadata (shape, strides, dtype, device): an op over it gives what it gave before."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return (a.dtype == b.dtype and a.device == b.device and a.dim() == b.dim()
                and all(_same_dim(x, y) for x, y in zip(a.shape, b.shape))
                and all(_same_dim(x, y) for x, y in zip(a.stride(), b.stride()))
                and _same_dim(a.storage_offset(), b.storage_offset()))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_layout(x, y) for x, y in zip(a, b))
    return _same_dim(a, b)


def _same_strides(a: torch.Tensor, b: torch.Tensor) -> bool:
    from .analysis import same_size

    if a.dim() != b.dim():
        return False
    return all(same_size(x, y) or same_size(s, 1) for x, y, s in zip(a.stride(), b.stride(), a.shape))


def _trim_defaults(op: Any, args: tuple) -> tuple:
    """Drop trailing positional arguments equal to their schema default (readable graphs)."""
    if not isinstance(op, torch._ops.OpOverload):
        return args
    schema_args = [a for a in op._schema.arguments if not a.kwarg_only]
    args = list(args)
    while args and len(args) <= len(schema_args):
        spec = schema_args[len(args) - 1]
        if not spec.has_default_value():
            break
        default, value = spec.default_value, args[-1]
        if isinstance(value, (list, tuple)) or isinstance(value, fx.Node):
            break
        if type(value) is not type(default) or value != default:
            break
        args.pop()
    return tuple(args)
