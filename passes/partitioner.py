"""Partition an ATen graph into groups: generated kernels, vendor-library calls, ATen fallbacks.

On a target that generates kernels, pointwise ops, views and reductions are fused greedily in graph
order: a node joins the group of one of its producers when

* the group's iteration space admits it: a pointwise group of N elements takes nodes of N elements;
  a reduction group over ``x`` rows of ``r`` elements takes reductions with the same ``(x, r)`` and
  nodes of ``x * r`` (full rows) or ``x`` (one value per row) elements;
* no path leaves the group and comes back into it through the new node (which would make the
  contracted graph cyclic): checked on the contracted graph built so far (networkx), so paths
  through other groups count too;
* the lowering accepts the grown group (a trial lowering; it rejects e.g. a row result read at
  another row).

After a node joins, the groups of its other producers fold into its group where they fit the same
way (a producer of one value per row into a row reduction, a scalar into anything, a smaller
producer read broadcast when recomputing it is cheap: ``absorb_space``). Once every node
is placed, groups of one space that are independent and close fuse horizontally, unless that holds
bytes alive past the graph's peak (``merge_horizontal``): small models are launch-bound, and each
merge is one launch fewer.

A scatter-add (``index_put(accumulate=True)``, ``scatter_add``: atomic adds) is a kernel root over
the points of its source, space ``("s", n)``: it joins the pointwise group that computes its values
(``("p", n)``), and nothing joins its group afterwards, since a consumer of the destination needs
every point's addition done (a grid-wide barrier). A constant fill (``full``/``zeros``) that only
the scatter reads is folded into its group: the launcher fills the output, no kernel writes it.

Matmul, convolution and attention go to the vendor library through ATen; random, in-place and
unknown ops run through ATen node by node (logged at debug level with the op name). Views left
outside every kernel stay ATen views (metadata only, no copy).
"""

from __future__ import annotations

import logging
import operator
from collections import Counter
from dataclasses import dataclass, field

import networkx as nx
import torch
import torch.fx as fx

from agnostic_rt.targets import Target

log = logging.getLogger("agnostic_rt.partition")
aten = torch.ops.aten

KERNEL = "kernel"  # a fused group a backend generates code for
LIBRARY = "library"  # matmul / conv / attention: the vendor library through ATen
ATEN = "aten"  # run node by node through ATen (the CPU target, or a fallback)

#: Groups further apart than this many graph nodes are not fused horizontally (see merge_horizontal).
HORIZONTAL_WINDOW = 64
#: A producer that computes may be recomputed this many times per value in the kernel that reads it
#: broadcast, rather than stored by a launch of its own (see absorb_space).
BROADCAST_RECOMPUTE = 16
#: Ops that only move values (recomputing them at every point that reads them costs the same loads).
_DATA_MOVES = frozenset({
    aten.embedding, aten.index_select, aten.gather, aten.index, aten.clone, aten.lift_fresh_copy,
    aten._to_copy, aten.copy, aten.expand, aten.arange, aten.full, aten.scalar_tensor, aten.zeros,
    aten.ones, torch.ops.prims.iota, torch.ops.prims.convert_element_type,
})

# Packets whose work belongs to the vendor library (cuBLAS/hipBLASLt, cuDNN/MIOpen, flash attention).
LIBRARY_OPS = frozenset({
    aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.matmul, aten.linear, aten.convolution,
    aten.convolution_backward, aten.scaled_dot_product_attention,
    aten._scaled_dot_product_flash_attention_for_cpu, aten._scaled_dot_product_flash_attention_for_cpu_backward,
    aten._scaled_dot_product_efficient_attention, aten._scaled_dot_product_efficient_attention_backward,
    aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_flash_attention_backward,
    aten._scaled_dot_product_cudnn_attention, aten._scaled_dot_product_cudnn_attention_backward,
    aten.native_layer_norm, aten.native_layer_norm_backward, aten.embedding_dense_backward,
})


@dataclass
class Group:
    """A set of nodes that runs as one unit. ``nodes`` are in graph order."""

    kind: str
    nodes: list[fx.Node]
    inputs: list[fx.Node] = field(default_factory=list)  # values defined outside, read inside
    outputs: list[fx.Node] = field(default_factory=list)  # values defined inside, read outside

    @property
    def ops(self) -> list[str]:
        return [str(n.target) for n in self.nodes]


def packet_of(node: fx.Node):
    target = node.target
    return getattr(target, "overloadpacket", target)


def partition(gm: fx.GraphModule, target: Target) -> list[Group]:
    """Split ``gm`` into groups, ordered by their first node.

    On a target that runs everything through ATen, every node is its own ATen group: the program
    inlines them, so there is nothing to gain from grouping.
    """
    if not target.generates_kernels:
        groups: list[Group] = []
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            kind = LIBRARY if packet_of(node) in LIBRARY_OPS else ATEN
            groups.append(Group(kind, [node], inputs=list(node.all_input_nodes), outputs=[node]))
        return groups
    return FusionPartitioner(gm).run()


def _is_impure(node: fx.Node) -> bool:
    schema = getattr(node.target, "_schema", None)
    if schema is not None and schema.is_mutable:
        return True
    return packet_of(node) in _RANDOM or "random" in str(node.target) or "rand" in str(node.target)


# Random ops are barriers: their ATen kernel owns the RNG stream (never replayed inside a kernel).
_RANDOM = frozenset({aten.bernoulli, aten.native_dropout, aten.rand, aten.randn, aten.rand_like, aten.randn_like,
                     aten.randint, aten.randint_like, aten.normal, aten.uniform, aten.multinomial})


class FusionPartitioner:
    """Greedy producer-consumer fusion (see the module docstring for the legality rules)."""

    def __init__(self, gm: fx.GraphModule):
        from agnostic_rt.backends.lowering import lower as lowering

        self.low = lowering
        self.gm = gm
        self.order = {n: i for i, n in enumerate(gm.graph.nodes)}
        self.gid: dict[fx.Node, int] = {}
        self.members: dict[int, list[fx.Node]] = {}
        self.space: dict[int, tuple] = {}  # ("p", numel) or ("r", xnumel, rnumel)
        # The contracted graph so far: a unit is ("g", group id) or ("n", node) for an ungrouped node.
        self.units = nx.DiGraph()
        self._next = 0
        self._became_rows = False  # the last join turned a pointwise group into a reduction

    # -- classification
    def fusible(self, node: fx.Node) -> bool:
        if node.op != "call_function" or packet_of(node) in LIBRARY_OPS or _is_impure(node):
            return False
        return self.low.is_lowerable(node)

    def node_space(self, node: fx.Node):
        points = self.low.scatter_space(node)
        if points is not None:
            return ("s", points)
        red = self.low.reduction_space(node)
        if red is not None:
            return ("r", *red)
        val = node.meta.get("val")
        if isinstance(val, (tuple, list)):
            return None  # split / unbind: free, constrained through their getitems
        return ("p", self.low.numel_of(node))

    @staticmethod
    def merge_space(group_space, node_space):
        """The group's space with the node in it, or None when they do not fit one kernel."""
        if node_space is None:
            return group_space
        if group_space[0] == "s" or node_space[0] == "s":  # a scatter closes its group
            return node_space if node_space == ("s", group_space[1]) and group_space[0] != "r" else None
        if group_space[0] == "p" and node_space[0] == "p":
            return group_space if group_space[1] == node_space[1] else None
        if group_space[0] == "p":  # a reduction joins a pointwise group of full rows
            return node_space if group_space[1] == node_space[1] * node_space[2] else None
        if node_space[0] == "r":
            return group_space if node_space[1:] == group_space[1:] else None
        x, r = group_space[1], group_space[2]
        return group_space if node_space[1] in (x * r, x) else None

    # -- the pass
    def run(self) -> list[Group]:
        for node in self.gm.graph.nodes:
            if node.op == "call_function" and self.fusible(node):
                self.place(node)
            elif node.op == "call_function" and packet_of(node) not in LIBRARY_OPS:
                log.debug("ATen node %s (%s)", node.name, node.target)
            self.link(node)
            if node in self.gid:
                # A pointwise group that just became a reduction admits producers it refused
                # before (one value per row): look at every member's producers again.
                rescan = self._became_rows
                self._became_rows = False
                self.merge_siblings(node, self.members[self.gid[node]] if rescan else [node])
        self.peel_views()
        # After peeling, a group's place is that of its last real node; the contracted graph is
        # rebuilt for the groups and views as they now are.
        self.units = nx.DiGraph()
        for node in self.gm.graph.nodes:
            self.link(node)
        self.merge_horizontal()
        return self.groups()

    def unit(self, node: fx.Node):
        g = self.gid.get(node)
        return ("g", g) if g is not None else ("n", node)

    def link(self, node: fx.Node) -> None:
        """Add ``node``'s edges to the contracted graph (after its group is decided)."""
        u = self.unit(node)
        self.units.add_node(u)
        for i in node.all_input_nodes:
            if self.unit(i) != u:
                self.units.add_edge(self.unit(i), u)

    def place(self, node: fx.Node) -> None:
        space = self.node_space(node)
        if packet_of(node) is operator.getitem:
            src = node.args[0]
            if src in self.gid:  # a tuple element joins its producer, whatever its size
                self.join(node, self.gid[src], self.space[self.gid[src]])
            return
        cands = []
        for i in node.all_input_nodes:
            g = self.gid.get(i)
            if g is not None and g not in cands:
                cands.append(g)
        # Prefer a reduction's group (the consumer then reads the row result from registers), then
        # the larger group.
        cands.sort(key=lambda g: (self.space[g][0] != "r", -len(self.members[g])))
        for g in cands:
            merged = self.merge_space(self.space[g], space)
            if merged is None or self.creates_cycle(node, g):
                continue
            if self.trial(self.members[g] + [node]):
                self.join(node, g, merged)
                return
        if space is None and not cands:
            return  # a lone split/unbind of a non-kernel value: an ATen view
        if space is None:
            return
        if self.trial([node]):
            g = self._next
            self._next += 1
            self.members[g] = []
            self.join(node, g, space)
        else:
            log.debug("ATen node %s (%s): not lowerable alone", node.name, node.target)

    def merge_siblings(self, node: fx.Node, readers: list[fx.Node]) -> None:
        """Fold the other producer groups of ``readers`` (``node``, or all of its group) into
        ``node``'s group.

        Greedy joining follows one producer edge, so ``gelu(x * w) * sigmoid(x)`` would leave
        ``sigmoid(x)`` in a kernel of its own that writes a tensor the other one reads back (seen on
        an H200: such a chain reached 52% of copy bandwidth). Siblings of one iteration space merge
        when the contracted graph stays acyclic and the union still lowers.
        """
        g = self.gid[node]
        for i in [i for r in list(readers) for i in r.all_input_nodes]:
            h = self.gid.get(i)
            if h is None or h == g or h not in self.members:
                continue
            merged = self.absorb_space(self.space[g], self.space[h], h)
            if merged is not None:
                self.merge_groups(g, h, merged)
        if self.low.scatter_space(node) is not None:
            self.absorb_fill(node, g)

    def absorb_space(self, gs: tuple, hs: tuple, h: int) -> tuple | None:
        """The space of group ``g`` (``gs``) after it takes in its producer group ``h`` (``hs``), or None.

        A producer fits where one of its nodes would (:meth:`merge_space`): same points, full rows
        or one value per row of a reduction. A scalar (one element, e.g. the ``full([], 0.)`` of a
        ReLU's backward) fits any kernel, read as a broadcast: its own launch would cost more than
        the kernel it feeds; so does an empty producer (an empty KV cache ``cat``-ed to the keys),
        whose group launches nothing but is still a call per step. A smaller pointwise producer the kernel reads broadcast (a position
        embedding added over the batch) is recomputed at each point that reads it: free when it only
        moves data (loads, gathers, copies), and otherwise allowed up to ``BROADCAST_RECOMPUTE``
        evaluations per value. A scatter-add's group takes the pointwise groups over its points.
        """
        if gs[0] == "s" or hs[0] == "s":
            return gs if gs[0] == "s" and hs == ("p", gs[1]) else None
        if hs in (("p", 1), ("p", 0)):  # a scalar, or nothing (an empty KV cache's constant)
            return gs
        merged = self.merge_space(gs, hs)
        if merged is not None or hs[0] != "p" or hs[1] == 0:
            return merged
        points = gs[1] if gs[0] == "p" else gs[1] * gs[2]
        if points % hs[1] or (points // hs[1] > BROADCAST_RECOMPUTE and not self.moves_data(h)):
            return None
        return gs

    def moves_data(self, g: int) -> bool:
        """Whether group ``g`` only moves values: views, copies, gathers, index and constant sources."""
        return all(packet_of(n) in self.low.VIEW_OPS or packet_of(n) in _DATA_MOVES for n in self.members[g])

    def merge_groups(self, g: int, h: int, space: tuple) -> bool:
        """Fold group ``h`` into ``g`` (space ``space``) when the contracted graph stays acyclic and
        the union lowers."""
        if self.merge_creates_cycle(g, h):
            return False
        union = sorted(self.members[g] + self.members[h], key=self.order.__getitem__)
        if not self.trial(union):
            return False
        for n in self.members.pop(h):
            self.gid[n] = g
        self.members[g] = union
        self.space[g] = space
        del self.space[h]
        nx.contracted_nodes(self.units, ("g", g), ("g", h), self_loops=False, copy=False)
        return True

    def merge_horizontal(self) -> None:
        """Fuse groups of one iteration space that do not depend on each other and sit close in the
        graph: one launch instead of two (small models are launch-bound), and an input both read is
        read once -- e.g. a layer norm's weight and bias gradients and the bias gradient before it,
        column sums over one batch. Inductor fuses such nodes when they share a read; here sharing
        is not required.

        The merged kernel runs at the later group's place, so the earlier group's inputs live
        longer. A merge is refused when something reads the earlier group's results before that
        place (it would wait too, and hold its own inputs), when it raises the graph's peak of stored bytes
        (:meth:`live_bytes` with the earlier group moved: the rule Inductor's
        ``are_long_distant_nodes`` approximates by distance), or when the groups are more than
        ``HORIZONTAL_WINDOW`` nodes apart (a bound on the search)."""
        peak = max(self.live_bytes(), default=0)
        by_space: dict[tuple, list[int]] = {}
        for g in sorted(self.members, key=self.position):
            if self.space[g][0] != "s":
                by_space.setdefault(self.space[g], []).append(g)
        for groups in by_space.values():
            for k, g in enumerate(groups):
                for h in groups[k + 1:]:
                    if g not in self.members or h not in self.members or not self.near(g, h):
                        continue
                    early, late = sorted((g, h), key=self.position)
                    if self.read_before(early, self.position(late)):
                        continue  # its readers would wait for the later group (and their inputs with them)
                    if max(self.live_bytes(moved=(early, late)), default=0) <= peak:
                        self.merge_groups(g, h, self.space[g])

    def read_before(self, g: int, when: int) -> bool:
        """Whether a value group ``g`` stores is read by a node outside it placed before ``when``."""
        for out in self.io(self.members[g])[1]:
            for u in out.users:
                h = self.gid.get(u)
                if h != g and (self.position(h) if h is not None else self.order[u]) < when:
                    return True
        return False

    def position(self, g: int) -> int:
        """Where group ``g``'s kernel runs: at its last node (as build_program places it)."""
        return self.order[self.members[g][-1]]

    def near(self, g: int, h: int) -> bool:
        lo_g, hi_g = self.order[self.members[g][0]], self.position(g)
        lo_h, hi_h = self.order[self.members[h][0]], self.position(h)
        return max(abs(lo_g - hi_h), abs(lo_h - hi_g)) <= HORIZONTAL_WINDOW

    def live_bytes(self, moved: tuple[int, int] | None = None) -> list[int]:
        """Bytes stored at each graph position: graph inputs throughout (the caller may hold them:
        parameters), library and ATen results and kernel outputs (a group's inner values are never
        stored) from where they are made until their storage's last read; views own nothing.
        ``moved=(g, h)``: as if group ``g`` ran at group ``h``'s place.

        A unit runs where ``build_program`` puts it: at its last node's position (a kernel's last
        member), or later when something it reads runs later (a view of a kernel output whose
        group ends after the view, and everything reading that view)."""
        units = self.units
        if moved is not None:
            units = nx.contracted_nodes(units, ("g", moved[1]), ("g", moved[0]), self_loops=False)
        start: dict = {}
        for u in nx.topological_sort(units):
            own = self.position(u[1]) if u[0] == "g" else self.order[u[1]]
            start[u] = max([own, *(start[p] for p in units.predecessors(u))])

        def at(n: fx.Node) -> int:
            g = self.gid.get(n)
            if g is None:
                return start.get(("n", n), self.order[n])
            return start[("g", moved[1] if moved is not None and g == moved[0] else g)]

        def last_read(n: fx.Node) -> int:
            last = -1
            for u in n.users:
                last = max(last, at(u))
                if u not in self.gid and packet_of(u) in self.low.VIEW_OPS:
                    last = max(last, last_read(u))  # an ATen view keeps its source's storage
            return last

        delta = [0] * (len(self.order) + 1)
        for n in self.order:
            if n.op == "placeholder":
                delta[0] += _nbytes(n)
                continue
            if n.op != "call_function" or not _owns_storage(n, self.low.VIEW_OPS):
                continue
            g = self.gid.get(n)
            if g is not None and all(self.gid.get(u) == g for u in n.users):
                continue
            born = at(n)
            delta[born] += _nbytes(n)
            delta[max(born, last_read(n)) + 1] -= _nbytes(n)
        live, total = [], 0
        for d in delta[:-1]:
            total += d
            live.append(total)
        return live

    def absorb_fill(self, node: fx.Node, g: int) -> None:
        """Fold the constant fill a scatter-add adds into (read by nothing else) into its group."""
        dest = node.args[0]
        h = self.gid.get(dest)
        if self.low.fill_value(dest) is None or len(dest.users) != 1 or h is None or h == g \
                or self.members.get(h) != [dest]:
            return
        self.merge_groups(g, h, self.space[g])  # the fill's only reader is in g: no cycle can close

    def merge_creates_cycle(self, g: int, h: int) -> bool:
        """Whether contracting groups g and h closes a cycle: a path between them through a third unit."""
        a, b = ("g", g), ("g", h)
        if a not in self.units or b not in self.units:
            return False
        view = nx.restricted_view(self.units, [], [(a, b), (b, a)])
        return nx.has_path(view, a, b) or nx.has_path(view, b, a)

    def join(self, node: fx.Node, g: int, space) -> None:
        self._became_rows = self._became_rows or (space[0] == "r" and self.space.get(g, space)[0] == "p")
        self.gid[node] = g
        self.members[g].append(node)
        self.space[g] = space

    def creates_cycle(self, node: fx.Node, g: int) -> bool:
        # Joining ``g`` adds edges unit(i) -> g for every input i outside it; a cycle needs a path
        # from g back to one of those units in the contracted graph as it stands (group-level
        # paths included: another group may already depend on g through a member added later).
        src = ("g", g)
        if src not in self.units:
            return False
        others = {self.unit(i) for i in node.all_input_nodes} - {src}
        if not others:
            return False
        reach = nx.descendants(self.units, src)
        return bool(others & reach)

    def io(self, nodes: list[fx.Node]) -> tuple[list[fx.Node], list[fx.Node]]:
        inside = set(nodes)
        inputs: list[fx.Node] = []
        outputs: list[fx.Node] = []
        for n in nodes:
            for i in n.all_input_nodes:
                if i not in inside and i not in inputs:
                    inputs.append(i)
            if any(u not in inside for u in n.users):
                outputs.append(n)
        return inputs, outputs

    def trial(self, nodes: list[fx.Node]) -> bool:
        inputs, outputs = self.io(nodes)
        # Tuple values (split, var_mean) are never stored whole: their getitems are.
        outputs = [o for o in outputs if not isinstance(o.meta.get("val"), (tuple, list))]
        if not outputs:
            return True  # only a tuple so far; its getitems decide
        try:
            self.low.lower_group(nodes, inputs, outputs)
            return True
        except (self.low.Unsupported, self.low.Unfusable) as e:
            log.debug("not fused: %s: %s", nodes[-1].target, e)
            return False
        except Exception as e:  # a lowering bug: keep the node out rather than fail the compile
            log.warning("trial lowering failed at %s: %r", nodes[-1].target, e)
            return False

    def peel_views(self) -> None:
        """Views whose every user is outside their group run as ATen views on the stored value."""
        self.split_shared_views()
        changed = True
        while changed:
            changed = False
            for g, nodes in self.members.items():
                for n in list(reversed(nodes)):
                    if not self.is_view(n) or any(self.gid.get(u) == g for u in n.users):
                        continue
                    nodes.remove(n)
                    del self.gid[n]
                    if not n.users:  # its readers moved to an outside copy: peeled, it would
                        self.gm.graph.erase_node(n)  # still make its source an output
                    changed = True
        for g, nodes in list(self.members.items()):
            real = [n for n in nodes if packet_of(n) not in self.low.VIEW_OPS]
            if not real:
                for n in nodes:
                    del self.gid[n]
                del self.members[g], self.space[g]

    def is_view(self, node: fx.Node) -> bool:
        """A view the lowering folds into indexing (not a getitem, not a tuple-valued split)."""
        return (packet_of(node) in self.low.VIEW_OPS and packet_of(node) is not operator.getitem
                and not isinstance(node.meta.get("val"), (tuple, list)))

    def split_shared_views(self) -> None:
        """A view of a value computed outside its group, read both inside the group and outside it,
        would be stored as a kernel output: a copy the size of the view (GPT-2's key and value
        permutes, read by the KV-cache cat in the kernel and by attention outside). Readers outside
        get an ATen view of the outside value of their own instead (metadata only), so the kernel
        neither writes nor owns it, and an output that aliased its input in the traced graph still
        does."""
        for g, nodes in list(self.members.items()):
            copies: dict[fx.Node, fx.Node] = {}
            for n in sorted(nodes, key=self.order.__getitem__):
                readers = [u for u in n.users if self.gid.get(u) != g]
                if not readers or not self.is_view(n):
                    continue
                ext = self.outside_copy(n, g, copies)
                if ext is not None:
                    for u in readers:
                        u.replace_input_with(n, ext)

    def outside_copy(self, n: fx.Node, g: int, copies: dict[fx.Node, fx.Node]) -> fx.Node | None:
        """``n`` as a node outside group ``g``: itself if it is not a member, an ATen copy of a view
        chain rooted outside (made once, kept in ``copies``), None if ``g`` computes it."""
        if self.gid.get(n) != g:
            return n
        if n in copies:
            return copies[n]
        srcs = n.all_input_nodes
        if not self.is_view(n) or len(srcs) != 1:
            return None
        root = self.outside_copy(srcs[0], g, copies)
        if root is None:
            return None
        with self.gm.graph.inserting_after(n):
            copies[n] = self.gm.graph.node_copy(n, lambda a: root if a is srcs[0] else a)
        self.order[copies[n]] = self.order[n]
        return copies[n]

    def groups(self) -> list[Group]:
        out: list[Group] = []
        seen: set[int] = set()
        for node in self.gm.graph.nodes:
            if node.op != "call_function":
                continue
            g = self.gid.get(node)
            if g is None:
                kind = LIBRARY if packet_of(node) in LIBRARY_OPS else ATEN
                out.append(Group(kind, [node], inputs=list(node.all_input_nodes), outputs=[node]))
                continue
            if g in seen:
                continue
            seen.add(g)
            nodes = sorted(self.members[g], key=self.order.__getitem__)
            inputs, outputs = self.io(nodes)
            out.append(Group(KERNEL, nodes, inputs=inputs, outputs=outputs))
        if not _is_acyclic(out):  # a partitioner bug must not fail the compile: run it all through ATen
            log.warning("partition produced a cyclic group graph; running this graph through ATen")
            return [Group(LIBRARY if packet_of(n) in LIBRARY_OPS else ATEN, [n], inputs=list(n.all_input_nodes),
                          outputs=[n]) for n in self.gm.graph.nodes if n.op == "call_function"]
        return out


def _owns_storage(node: fx.Node, views: frozenset) -> bool:
    """A value with storage of its own: not a view, and an item of a tuple only when the tuple is
    an op's results (SDPA's backward, var_mean), not a split's views."""
    if packet_of(node) is operator.getitem:
        src = node.args[0]
        return isinstance(src, fx.Node) and packet_of(src) not in views
    return packet_of(node) not in views


def _nbytes(node: fx.Node) -> int:
    """Bytes of the node's value at its example sizes (symbolic sizes read as their hints, as the
    lowering reads them, so no size is guarded on)."""
    from agnostic_rt.backends.lowering.lower import Unsupported, numel_of

    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return 0
    try:
        return numel_of(node) * val.element_size()
    except Unsupported:  # a size without an example value: not counted
        return 0


def _is_acyclic(groups: list[Group]) -> bool:
    """Whether the contracted graph is a DAG (build_program orders units topologically)."""
    unit = {n: k for k, g in enumerate(groups) for n in g.nodes}
    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(groups)))
    for k, g in enumerate(groups):
        for i in g.inputs:
            if i in unit and unit[i] != k:
                dag.add_edge(unit[i], k)
    return nx.is_directed_acyclic_graph(dag)


def coverage(groups: list[Group], compiled: set[int] | None = None) -> dict:
    """How the graph's ops are run: generated kernels, library calls, ATen views, ATen fallbacks.

    ``compiled``: the indices of kernel groups that got a launcher (default: every kernel group).
    ``getitem`` is not an op and is not counted.
    """
    from agnostic_rt.backends.lowering.lower import VIEW_OPS

    counts = Counter()
    fallback: Counter = Counter()
    for k, g in enumerate(groups):
        ran = g.kind == KERNEL and (compiled is None or k in compiled)
        for n in g.nodes:
            if packet_of(n) is operator.getitem:
                continue
            if ran:
                counts["generated"] += 1
            elif packet_of(n) in LIBRARY_OPS:
                counts["library"] += 1
            elif packet_of(n) in VIEW_OPS:
                counts["views"] += 1
            else:
                counts["fallback"] += 1
                fallback[str(n.target)] += 1
    compute = counts["generated"] + counts["fallback"]
    return {
        "generated": counts["generated"], "fallback": counts["fallback"], "views": counts["views"],
        "library": counts["library"],
        "generated_share": counts["generated"] / compute if compute else 1.0,
        "fallback_ops": dict(fallback.most_common()),
    }
