"""Two-network (multi-network) VNN-LIB 2.0 queries, verified through a product network.

A :class:`~vnnx.io.vnnlib2.Query` over networks ``f``, ``g``, ... asks for inputs ``X_f, X_g, ...``
and their outputs ``Y_f = f(X_f), Y_g = g(X_g), ...`` that meet linear rows over all of them.
:func:`build_product` turns it into one single-network problem that every verify stage knows:

* **Free inputs.** Input elements linked by a two-variable equality (``X_f[i] == X_g[i]``, also
  with a scale or offset: ``X_g[i] == 2 X_f[i] + 0.5``) are substituted: each input element is
  ``s * z_r + t`` of one free variable ``z_r``. Each network's input is an affine map (a
  ``Linear`` node) of ``z``, so the bound stages see the shared inputs as one variable.
* **Box.** One-variable rows on inputs become the box on ``z`` (exact). Inequality rows between
  inputs (``X_f[0] <= X_g[0]``) then tighten the box by interval propagation (a sound
  over-approximation: the propagated bounds are widened by :data:`PROPAGATION_SLACK`).
* **Product graph.** ``z`` -> per network: ``Linear`` (the substitution) -> ``Reshape`` -> the
  network's own nodes -> ``Reshape`` to ``(1, m)``; then one ``Concat`` of every network's output
  and of ``z`` itself. Output columns of the product: ``[Y_f, Y_g, ..., z]``.
* **Every other row** (output relations, input inequalities, rows mixing inputs and outputs) is a
  row over the product's outputs, since the inputs are the pass-through part ``z``: the clauses
  are ``common + disjunct`` for each disjunct. So the bound stages refute them soundly (a row
  refuted on the box refutes the clause), the input split refines them, and the MILP holds them
  exactly (the input polytope is a set of rows of its clause). Strict rows (``<``) are read as
  ``<=``, which is sound for refuting.

A ``sat`` is only reported with a witness that :meth:`ProductVerifier.witness` confirmed by
running every ORIGINAL ONNX file in onnxruntime at the float32 inputs ``M z + t`` and checking
every row of the query (:func:`query_holds`): non-strict rows within the witness tolerance
(VNN-COMP's 1e-4), strict rows ``a v < b`` exactly. The product's own forward pass is never
trusted for it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from vnnx.errors import InputFileError, ShapeMismatchError, VnnxError
from vnnx.io.vnnlib import Property, Spec
from vnnx.io.vnnlib2 import LinearRow, Query
from vnnx.verify import WITNESS_TOL, Counterexample, Verifier

__all__ = ["Product", "build_product", "ProductVerifier", "verify_query", "query_holds", "input_substitution",
           "parse_onnx_args", "assign_networks", "load_networks"]

#: Bounds found by propagating inequality rows are widened by this (absolute + relative): float64
#: round-off must never cut a feasible point off the box.
PROPAGATION_SLACK = 1e-9
PROPAGATION_ROUNDS = 20


@dataclass
class Product:
    """The single-network form of a multi-network query.

    ``graph``: input ``z`` (1, n_free), output (1, n_y + n_free) = ``[Y_net1, Y_net2, ..., z]``;
    ``input_map``, ``input_offset``: every query column that is an input element is
    ``input_map[c] @ z + input_offset[c]`` (rows of other columns are 0); ``output_columns``: the
    query column of each product output among the Y part; ``spec``: one property (the box on
    ``z`` and the clauses over the product outputs); ``empty``: the input constraints alone have
    no solution (the box on ``z`` is empty), so the query is unsat."""

    query: Query
    graph: object
    models: dict
    input_map: np.ndarray
    input_offset: np.ndarray
    output_columns: np.ndarray
    spec: Spec
    empty: bool = False

    @property
    def n_free(self) -> int:
        return int(self.input_map.shape[1])

    def inputs_of(self, z: np.ndarray) -> np.ndarray:
        """The query's input columns (others 0) at free values ``z`` (n_free,), float64."""
        return self.input_map @ np.asarray(z, dtype=np.float64).reshape(-1) + self.input_offset


def _input_columns(query: Query) -> np.ndarray:
    is_input = np.zeros(query.n_columns, dtype=bool)
    for t in query.tensors:
        if t.kind == "input":
            is_input[t.offset:t.offset + t.size] = True
    return is_input


def _equalities(rows: list[LinearRow]) -> list[tuple[int, int]]:
    """Pairs of row indices (r, s) with row s = -row r, both non-strict: ``row r == bound``."""
    seen: dict = {}
    pairs = []
    used = set()
    for r, row in enumerate(rows):
        if row.strict:
            continue
        key = (tuple(sorted(row.coeffs.items())), row.bound)
        neg = (tuple(sorted((c, -v) for c, v in row.coeffs.items())), -row.bound)
        other = seen.get(neg)
        if other is not None and other not in used:
            pairs.append((other, r))
            used.update((other, r))
            seen.pop(neg)
        else:
            seen.setdefault(key, r)
    return pairs


def input_substitution(query: Query):
    """``(root, scale, offset, consumed)``: every input column ``c`` is
    ``scale[c] * x[root[c]] + offset[c]`` by the two-variable input equalities among the common
    rows (the rows used are in ``consumed``); columns that are not inputs keep themselves."""
    is_input = _input_columns(query)
    n = query.n_columns
    root = np.arange(n)
    scale = np.ones(n)
    offset = np.zeros(n)
    consumed: set[int] = set()
    rows = query.common
    for r, s in _equalities(rows):
        row = rows[r]
        cols = [c for c, v in row.coeffs.items() if v != 0.0]
        if len(cols) != 2 or not all(is_input[c] for c in cols):
            continue
        a, b = cols
        ca, cb = row.coeffs[a], row.coeffs[b]
        ra, rb = root[a], root[b]
        if ra == rb:
            continue   # a relation on one free variable: it stays a row
        # ca (sa z_ra + ta) + cb (sb z_rb + tb) = bound  =>  z_ra = S z_rb + T
        S = -cb * scale[b] / (ca * scale[a])
        T = (row.bound - ca * offset[a] - cb * offset[b]) / (ca * scale[a])
        moved = root == ra
        offset[moved] = scale[moved] * T + offset[moved]
        scale[moved] = scale[moved] * S
        root[moved] = rb
        consumed.update((r, s))
    return root, scale, offset, consumed


def _row_in_z(row: LinearRow, free_of, scale, offset):
    """A row over input columns as ``(coefficients over z: dict, bound)``."""
    coeffs: dict[int, float] = {}
    bound = row.bound
    for c, v in row.coeffs.items():
        k = free_of[c]
        coeffs[k] = coeffs.get(k, 0.0) + v * scale[c]
        bound -= v * offset[c]
    return {k: v for k, v in coeffs.items() if v != 0.0}, bound


def _propagate(rows_z, lo: np.ndarray, hi: np.ndarray) -> None:
    """Interval propagation of ``sum a_k z_k <= b`` rows into ``lo``/``hi`` (in place): each
    ``a_k z_k <= b - sum_{j != k} min(a_j z_j)``; new bounds are widened by the slack."""
    for _ in range(PROPAGATION_ROUNDS):
        changed = False
        for coeffs, bound in rows_z:
            mins = {k: min(a * lo[k], a * hi[k]) for k, a in coeffs.items()}
            if any(math.isnan(m) for m in mins.values()):
                continue
            for k, a in coeffs.items():
                rest = sum(m for j, m in mins.items() if j != k)
                if not math.isfinite(rest):
                    continue
                limit = (bound - rest) / a
                slack = PROPAGATION_SLACK * (1.0 + abs(limit))
                if a > 0 and limit + slack < hi[k]:
                    hi[k] = limit + slack
                    changed = True
                elif a < 0 and limit - slack > lo[k]:
                    lo[k] = limit - slack
                    changed = True
        if not changed:
            break


def _graph_of(path_or_model):
    from vnnx.graph import from_onnx

    return from_onnx(path_or_model)


def build_product(query: Query, models: Mapping[str, object]) -> Product:
    """The :class:`Product` of ``query`` with ``models[name]`` (a loaded model,
    :func:`vnnx.io.onnx.load_onnx`) for each declared network.

    Raises:
        VnnxError: a network without a model, a network with several input or output tensors, a
            declared size that is not the model's, or an input element left unbounded.
    """
    from vnnx.graph import Graph, Node
    from vnnx.ops.concat import Concat
    from vnnx.ops.linear import Linear
    from vnnx.ops.reshape import Reshape

    for net in query.networks:
        if net.name not in models:
            raise VnnxError(f"{query.path}: network {net.name!r} has no ONNX file (give --onnx {net.name}=PATH)")
        if len(net.inputs) != 1 or len(net.outputs) != 1:
            raise VnnxError(f"{query.path}: network {net.name} declares {len(net.inputs)} input and "
                            f"{len(net.outputs)} output tensors; vnnx verifies one of each")
        m = models[net.name]
        if net.inputs[0].size != m.n_inputs or net.outputs[0].size != m.n_outputs:
            raise ShapeMismatchError(
                f"{query.path}: network {net.name} declares {net.inputs[0].size} inputs / "
                f"{net.outputs[0].size} outputs, {m.path} has {m.n_inputs} / {m.n_outputs}")

    is_input = _input_columns(query)
    root, scale, offset, consumed = input_substitution(query)
    roots = sorted({int(root[c]) for c in np.flatnonzero(is_input)})
    free = {r: k for k, r in enumerate(roots)}
    n_free = len(roots)
    free_of = {int(c): free[int(root[c])] for c in np.flatnonzero(is_input)}
    input_map = np.zeros((query.n_columns, n_free))
    input_offset = np.zeros(query.n_columns)
    for c, k in free_of.items():
        input_map[c, k] = scale[c]
        input_offset[c] = offset[c]

    # The box on z: one-variable input rows exactly; inequality rows between inputs by propagation.
    lo = np.full(n_free, -np.inf)
    hi = np.full(n_free, np.inf)
    common = query.common
    relation_rows = []
    for r, row in enumerate(common):
        if r in consumed:
            continue
        cols = [c for c, v in row.coeffs.items() if v != 0.0]
        if not cols or not all(is_input[c] for c in cols):
            continue
        coeffs, bound = _row_in_z(row, free_of, scale, offset)
        if len(coeffs) == 1:
            ((k, a),) = coeffs.items()
            if a > 0:
                hi[k] = min(hi[k], bound / a)
            else:
                lo[k] = max(lo[k], bound / a)
            consumed.add(r)
        elif coeffs:
            relation_rows.append((coeffs, bound))
    _propagate(relation_rows, lo, hi)
    for k in range(n_free):
        if not (np.isfinite(lo[k]) and np.isfinite(hi[k])):
            names = [query.column_name(c) for c, j in free_of.items() if j == k]
            raise InputFileError(f"{query.path}: input {' = '.join(names)} is unbounded; vnnx needs a "
                                 "bounded input region")
    empty = bool(np.any(lo > hi))

    # The graph: z -> per network (Linear -> Reshape -> its nodes -> Reshape) -> Concat with z.
    nodes = [Node("z", None, (), (1, n_free))]
    outputs = []
    output_columns = []
    for net in query.networks:
        g = _graph_of(models[net.name])
        cols = np.arange(net.inputs[0].offset, net.inputs[0].offset + net.inputs[0].size)
        lin = Linear(input_map[cols], input_offset[cols])
        lin.in_shapes, lin.out_shape = ((1, n_free),), (1, len(cols))
        nodes.append(Node(f"{net.name}:inputs", lin, (0,), lin.out_shape))
        where = {0: len(nodes) - 1}
        if tuple(g.input_shape) != lin.out_shape:
            rs = Reshape(g.input_shape)
            rs.in_shapes, rs.out_shape = (lin.out_shape,), tuple(g.input_shape)
            nodes.append(Node(f"{net.name}:input", rs, (len(nodes) - 1,), rs.out_shape))
            where[0] = len(nodes) - 1
        for j, node in enumerate(g.nodes[1:], 1):
            nodes.append(Node(f"{net.name}:{node.name}", node.op, tuple(where[i] for i in node.inputs), node.shape))
            where[j] = len(nodes) - 1
        out = where[g.output]
        flat = (1, g.n_outputs)
        if tuple(g.output_shape) != flat:
            rs = Reshape(flat)
            rs.in_shapes, rs.out_shape = (tuple(g.output_shape),), flat
            nodes.append(Node(f"{net.name}:output", rs, (out,), flat))
            out = len(nodes) - 1
        outputs.append(out)
        t = net.outputs[0]
        output_columns.extend(range(t.offset, t.offset + t.size))
    cat = Concat(1, [None] * (len(outputs) + 1))
    cat.in_shapes = tuple(nodes[i].shape for i in outputs) + ((1, n_free),)
    n_y = len(output_columns)
    cat.out_shape = (1, n_y + n_free)
    nodes.append(Node("product", cat, tuple(outputs) + (0,), cat.out_shape))
    label = "product(" + ", ".join(f"{n.name}={models[n.name].path}" for n in query.networks) + ")"
    graph = Graph(nodes, len(nodes) - 1, label)

    # Every row not consumed, over the product outputs [Y..., z].
    position = {c: j for j, c in enumerate(output_columns)}

    def product_rows(rows: list[LinearRow]):
        a = np.zeros((len(rows), n_y + n_free))
        b = np.zeros(len(rows))
        for r, row in enumerate(rows):
            b[r] = row.bound
            for c, v in row.coeffs.items():
                if c in position:
                    a[r, position[c]] += v
                else:
                    a[r, n_y + free_of[c]] += v * scale[c]
                    b[r] -= v * offset[c]
        return a, b

    kept = [row for r, row in enumerate(common) if r not in consumed]
    clauses = [product_rows(kept + d) for d in query.disjuncts]
    prop = Property(np.where(empty, 0.0, lo), np.where(empty, 0.0, hi), clauses)
    spec = Spec(query.path, n_free, n_y + n_free, [prop])
    return Product(query, graph, dict(models), input_map, input_offset, np.asarray(output_columns), spec, empty)


class _ProductModel:
    """What :class:`~vnnx.verify.Verifier` reads of a model, for the product."""

    def __init__(self, product: Product) -> None:
        self.path = product.graph.label
        self.n_inputs = product.n_free
        self.n_outputs = product.spec.n_outputs


class ProductVerifier(Verifier):
    """A :class:`~vnnx.verify.Verifier` on the product graph whose witnesses are checked on the
    original ONNX files (module docstring)."""

    def __init__(self, product: Product, milp_backend: str = "highs", seed: int = 0,
                 witness_tol: float = WITNESS_TOL, device: str = "cpu") -> None:
        super().__init__(_ProductModel(product), milp_backend=milp_backend, seed=seed,
                         witness_tol=witness_tol, device=device, graph=product.graph)
        self.product = product

    def assignment(self, z: np.ndarray):
        """``(v, y)``: the query's column vector at free values ``z`` (inputs rounded to float32
        as the networks receive them, outputs from onnxruntime on each original file), and the
        product's output vector (float32)."""
        from vnnx.io.onnx import run_onnxruntime

        p = self.product
        x = p.inputs_of(z).astype(np.float32)
        v = np.zeros(p.query.n_columns)
        for net in p.query.networks:
            ti, to = net.inputs[0], net.outputs[0]
            xi = x[ti.offset:ti.offset + ti.size]
            y = run_onnxruntime(p.models[net.name], xi[None, :])[0]
            v[ti.offset:ti.offset + ti.size] = xi
            v[to.offset:to.offset + to.size] = np.asarray(y, dtype=np.float64).reshape(-1)
        prod_y = np.concatenate([v[p.output_columns], np.asarray(z, dtype=np.float64).reshape(-1)])
        return v, prod_y.astype(np.float32)

    def witness(self, prop, z) -> Optional[Counterexample]:
        """``z`` as a confirmed counterexample of the query, or None: the point is clipped to the
        box on ``z``, every network's float32 input ``M z + t`` runs in onnxruntime on its
        original file, and every row of the query (inputs and outputs, ``common`` and one
        disjunct) must hold (:func:`query_holds`)."""
        if self.product.empty:
            return None
        z = np.clip(np.asarray(z, dtype=np.float64).reshape(-1), prop.x_lower, prop.x_upper)
        v, prod_y = self.assignment(z)
        if not query_holds(self.product.query, v, self.witness_tol):
            return None
        q = self.product.query
        named = [(q.column_name(c), float(v[c])) for c in range(q.n_columns)]
        return Counterexample(z.astype(np.float32), prod_y, named=named)


def query_holds(query: Query, v: np.ndarray, tol: float = WITNESS_TOL) -> bool:
    """Whether the column vector ``v`` meets ``query``'s rows as a witness must: every common
    row and every row of some disjunct, a non-strict row ``a v <= b`` within ``tol``
    (``a v <= b + tol``), a strict row ``a v < b`` exactly, with no tolerance. A tolerance on a
    strict row would let ``Y_f[1] < Y_g[1]`` be met by equal outputs of equal inputs, which is no
    counterexample; so a witness here is one for any checker that reads ``<`` with or without
    VNN-COMP's tolerance."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)

    def ok(rows: list[LinearRow]) -> bool:
        a, b, strict = query.dense(rows)
        lhs = a @ v
        return bool(np.all(np.where(strict, lhs < b, lhs <= b + tol)))

    return ok(query.common) and any(ok(d) for d in query.disjuncts)


def verify_query(query: Query, models: Mapping[str, object], method: str = "auto",
                 timeout: Optional[float] = None, start: Optional[float] = None,
                 milp_backend: str = "highs", witness_tol: float = WITNESS_TOL, device: str = "cpu"):
    """Verify a multi-network query (:func:`vnnx.io.vnnlib2.read_query`) with ``models[name]``
    for each network (:func:`vnnx.io.onnx.load_onnx`); returns a
    :class:`~vnnx.verify.VerifyResult` whose ``sat`` counterexample names every column."""
    from vnnx.verify import VerifyResult, _Deadline

    product = build_product(query, models)
    if product.empty:
        deadline = _Deadline(timeout, start)
        return VerifyResult("unsat", deadline.elapsed(), "input-constraints", None, [])
    verifier = ProductVerifier(product, milp_backend=milp_backend, witness_tol=witness_tol, device=device)
    return verifier.verify(product.spec, method=method, timeout=timeout, start=start)


# ------------------------------------------------------------------------------ naming networks
_NAMED = re.compile(r"([A-Za-z][A-Za-z0-9_]*)=(.+)$")


def parse_onnx_args(values: Sequence[str], vnnlib: Optional[str] = None) -> list[tuple[Optional[str], str]]:
    """``--onnx`` values as ``[(name or None, path)]``. Each value is ``PATH``, ``NAME=PATH`` or
    the first column of a VNN-COMP 2026 instances.csv, ``[('f', 'a.onnx'), ('g', 'b.onnx')]``.
    A relative path of the list form that does not exist from here is looked up beside the
    folders above ``vnnlib`` (nearest first), where a benchmark keeps ``onnx/`` next to
    ``vnnlib/``."""
    from vnnx.io.vnnlib2 import parse_network_list

    out: list[tuple[Optional[str], str]] = []
    for value in values:
        text = value.strip()
        if text.startswith("["):
            for name, path in parse_network_list(text, "--onnx"):
                out.append((name, _locate(path, vnnlib)))
            continue
        match = _NAMED.match(text)
        if match and not Path(text).exists():
            out.append((match.group(1), match.group(2)))
        else:
            out.append((None, text))
    return out


def _locate(path: str, vnnlib: Optional[str]) -> str:
    p = Path(path)
    if p.is_absolute() or p.exists() or vnnlib is None:
        return path
    for folder in Path(vnnlib).resolve().parents:
        if (folder / p).exists():
            return str(folder / p)
    return path


def assign_networks(query: Query, entries: Sequence[tuple[Optional[str], str]]) -> dict[str, str]:
    """The ONNX path of every network of ``query`` from ``--onnx`` entries
    (:func:`parse_onnx_args`): ``NAME=PATH`` binds that network; one plain ``PATH`` binds the
    first declared network; a network declared ``(equal-to M)`` without a file of its own uses
    M's. Raises :class:`VnnxError` (one line) for an unknown name, a name given twice, several
    plain paths, or a network left without a file."""
    declared = [n.name for n in query.networks]
    paths: dict[str, str] = {}
    plain = [p for n, p in entries if n is None]
    for name, path in entries:
        if name is None:
            continue
        if name not in declared:
            raise VnnxError(f"--onnx {name}={path}: {query.path} declares no network {name!r} "
                            f"(it declares {', '.join(declared)})")
        if name in paths and paths[name] != path:
            raise VnnxError(f"--onnx: network {name!r} is given twice")
        paths[name] = path
    if len(plain) > 1:
        raise VnnxError(f"--onnx: {len(plain)} paths without a name; for several networks write "
                        f"--onnx NAME=PATH ({', '.join(declared)})")
    if plain:
        if declared[0] in paths:
            raise VnnxError(f"--onnx {plain[0]}: network {declared[0]!r} already has a file; name the "
                            "path (--onnx NAME=PATH)")
        paths[declared[0]] = plain[0]
    for net in query.networks:
        if net.name not in paths and net.equal_to is not None and net.equal_to in paths:
            paths[net.name] = paths[net.equal_to]
    missing = [n for n in declared if n not in paths]
    if missing:
        raise VnnxError(f"{query.path}: network {missing[0]!r} has no ONNX file; give --onnx "
                        f"{missing[0]}=PATH")
    return {n: paths[n] for n in declared}


def load_networks(paths: Mapping[str, str]) -> dict:
    """``{name: LoadedModel}``, each distinct file loaded once."""
    from vnnx.io.onnx import load_onnx

    loaded: dict[str, object] = {}
    for path in paths.values():
        if path not in loaded:
            loaded[path] = load_onnx(path)
    return {name: loaded[path] for name, path in paths.items()}
