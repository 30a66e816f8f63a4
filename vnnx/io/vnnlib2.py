"""VNN-LIB 2.0: typed, shaped networks, tensor indexing, queries over several networks.

A 2.0 query declares networks, each with named input and output tensors::

    (vnnlib-version <2.0>)
    (declare-network f
        (declare-input X_f real [5])
        (declare-output Y_f real [5]))
    (declare-network g (equal-to f)
        (declare-input X_g real [5])
        (declare-output Y_g real [5]))
    (assert (<= X_f[0] X_g[0]))
    (assert (< Y_f[1] Y_g[1]))

and, like 1.0, asks for an assignment that satisfies every assertion (``sat`` = a counterexample
exists). :func:`parse_query` reads it into a :class:`Query`: every tensor element is a column of
one variable vector, and the assertions are linear rows over it (a conjunction, and a disjunction
of conjunctions). A query over one network with one input and one output goes into the same
:class:`~vnnx.io.vnnlib.Spec` as 1.0 (:meth:`Query.to_spec`), so it runs through the normal
pipeline; a query over several networks raises :class:`MultiNetworkQueryError` there and is
verified through a product network instead (:mod:`vnnx.product`, ``vnnx verify --onnx NAME=PATH``).

Supported: ``declare-network`` with ``equal-to`` / ``isomorphic-to``, ``declare-input`` /
``declare-output`` (any element type, shape ``[d1,...,dk]`` or ``[]``, optional ONNX name),
``X[i,j]`` indexing (C order), ``<= >= < > == =``, ``and`` of comparisons, ``or`` of those, and
``+ - *`` with constant factors. Not supported: ``declare-hidden``, ``!=``, nonlinear terms.
"""
from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vnnx.errors import InputFileError, ShapeMismatchError, VnnxError
from vnnx.io.vnnlib_syntax import Formula, Row, SyntaxReader

__all__ = ["TensorDecl", "NetworkDecl", "LinearRow", "Query", "MultiNetworkQueryError",
           "parse_query", "read_query", "write_vnnlib2", "parse_network_list"]


class MultiNetworkQueryError(VnnxError):
    """A query the single-network :class:`~vnnx.io.vnnlib.Spec` form cannot hold."""


@dataclass
class TensorDecl:
    """One declared input or output tensor; its elements are columns ``offset .. offset+size-1``
    of the query's variable vector, in C order."""

    name: str
    network: str
    kind: str                     # "input" or "output"
    dtype: str                    # as written: real, float32, ...
    shape: tuple[int, ...]
    onnx_name: str | None
    offset: int

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def element_name(self, flat: int) -> str:
        if not self.shape:
            return self.name
        index = np.unravel_index(flat, self.shape)
        return f"{self.name}[{','.join(str(int(i)) for i in index)}]"


@dataclass
class NetworkDecl:
    """A declared network: its tensors in declaration order and how it relates to another."""

    name: str
    inputs: list[TensorDecl] = field(default_factory=list)
    outputs: list[TensorDecl] = field(default_factory=list)
    equal_to: str | None = None       # same structure and weights as that network
    isomorphic_to: str | None = None  # same structure (weights may differ)


@dataclass
class LinearRow:
    """``sum_c coeffs[c] * v[c] <= bound`` (``<`` when ``strict``) over the query's columns;
    ``line`` is where the comparison is written."""

    coeffs: dict[int, float]
    bound: float
    strict: bool
    line: int


@dataclass
class Query:
    """A parsed 2.0 query. Satisfied by a column vector ``v`` (every network's inputs and
    outputs, with each output equal to its network applied to its inputs) iff ``v`` meets every
    row of :attr:`common` and every row of some member of :attr:`disjuncts`."""

    path: str
    version: str
    networks: list[NetworkDecl]
    tensors: list[TensorDecl]
    n_columns: int
    _formula: Formula = field(repr=False)
    _reader: SyntaxReader = field(repr=False)

    @functools.cached_property
    def common(self) -> list[LinearRow]:
        """The rows every assignment must meet (built on first use: a single-network query
        read for :meth:`to_spec` never needs them)."""
        return self._rows(self._formula.common)

    @functools.cached_property
    def disjuncts(self) -> list[list[LinearRow]]:
        """Conjunctions of which one must hold too; ``[[]]`` when the query has no disjunction."""
        if self._formula.disjuncts is None:
            return [[]]
        return [self._rows(d) for d in self._formula.disjuncts]

    @functools.cached_property
    def _lines(self) -> list[int]:
        return _token_lines(self._reader)

    def _rows(self, rows: list[Row]) -> list[LinearRow]:
        out = []
        for row in rows:
            coeffs: dict[int, float] = {}
            for key, v in row.coeffs.items():
                if key is not None:
                    column = self.tensors[key[0]].offset + key[1]
                    coeffs[column] = coeffs.get(column, 0.0) + v
            out.append(LinearRow(coeffs, -row.coeffs.get(None, 0.0) + 0.0, row.strict,
                                 self._lines[row.at]))
        return out

    def network(self, name: str) -> NetworkDecl:
        for net in self.networks:
            if net.name == name:
                return net
        raise KeyError(name)

    def tensor(self, name: str) -> TensorDecl:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def column_name(self, column: int) -> str:
        for t in self.tensors:
            if t.offset <= column < t.offset + t.size:
                return t.element_name(column - t.offset)
        raise IndexError(column)

    def dense(self, rows: list[LinearRow]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(A: (k, n_columns), b: (k,), strict: (k,) bool)`` of ``rows``."""
        a = np.zeros((len(rows), self.n_columns))
        for r, row in enumerate(rows):
            for c, v in row.coeffs.items():
                a[r, c] = v
        return (a, np.array([row.bound for row in rows], dtype=np.float64),
                np.array([row.strict for row in rows], dtype=bool))

    def holds(self, v: np.ndarray, tol: float = 0.0) -> bool:
        """Whether the column vector ``v`` meets the assertions (networks not evaluated):
        every common row and all rows of some disjunct, each within ``tol``."""
        v = np.asarray(v, dtype=np.float64).reshape(-1)

        def ok(rows: list[LinearRow]) -> bool:
            a, b, strict = self.dense(rows)
            lhs = a @ v
            return bool(np.all(np.where(strict, lhs < b + tol, lhs <= b + tol)))

        return ok(self.common) and any(ok(d) for d in self.disjuncts)

    def to_spec(self, n_inputs: int | None = None, n_outputs: int | None = None):
        """The :class:`~vnnx.io.vnnlib.Spec` of a single-network query (strict comparisons read
        as non-strict, as for 1.0); raises :class:`MultiNetworkQueryError` otherwise."""
        from vnnx.io.vnnlib import _spec_from_formula

        if len(self.networks) != 1:
            names = ", ".join(n.name for n in self.networks)
            raise MultiNetworkQueryError(
                f"{self.path}: multi-network queries ({names}) do not fit a single-network Spec; "
                "verify them with vnnx.product.verify_query (vnnx verify --onnx NAME=PATH ...)")
        net = self.networks[0]
        if len(net.inputs) != 1 or len(net.outputs) != 1:
            raise MultiNetworkQueryError(
                f"{self.path}: network {net.name} declares {len(net.inputs)} input and "
                f"{len(net.outputs)} output tensors; vnnx verifies one of each")
        # Tensor 0 is the input and tensor 1 the output, so the formula's keys (tensor, element)
        # are the 1.0 keys (0, i) and (1, j).
        return _spec_from_formula(self._formula, self._reader, net.inputs[0].size,
                                  net.outputs[0].size, n_inputs, n_outputs,
                                  name_of=self._key_name)

    def _key_name(self, key) -> str:
        return self.tensors[key[0]].element_name(key[1])


_SHAPE = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)?\s*\]$")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*$")
_ELEMENT = re.compile(r"([A-Za-z][A-Za-z0-9_]*)\s*\[([^\]]*)\]$")


def _parse_shape(token: str) -> tuple[int, ...] | None:
    match = _SHAPE.match(token)
    if match is None:
        return None
    return tuple(int(d) for d in match.group(1).split(",")) if match.group(1) else ()


def parse_query(text: str, where: str) -> Query:
    """Parse VNN-LIB 2.0 text (``where`` names it in errors). See the module docstring."""
    reader = SyntaxReader(text, where)
    networks: list[NetworkDecl] = []
    tensors: list[TensorDecl] = []
    by_name: dict[str, TensorDecl] = {}
    index_of: dict[str, int] = {}
    cache: dict[str, dict] = {}
    n_columns = 0
    version = None

    def resolve(token: str, at: int) -> dict:
        term = cache.get(token)
        if term is not None:
            return term
        match = _ELEMENT.match(token)
        name = match.group(1) if match else token
        tensor = by_name.get(name)
        if tensor is None:
            raise reader.error(f"malformed VNN-LIB: undeclared identifier {name!r}", at)
        if match is None:
            if tensor.shape:
                raise reader.error(f"{name} has shape {list(tensor.shape)}; index it as "
                                   f"{name}[{','.join(['i'] * len(tensor.shape))}]",
                                   at)
            flat = 0
        else:
            try:
                index = tuple(int(i) for i in match.group(2).split(","))
            except ValueError:
                raise reader.error(f"malformed index in {token!r}", at) from None
            if len(index) != len(tensor.shape):
                index = None
            else:  # C order, by hand: numpy's ravel_multi_index costs more than the parse
                flat = 0
                for i, d in zip(index, tensor.shape):
                    if not 0 <= i < d:
                        index = None
                        break
                    flat = flat * d + i
            if index is None:
                raise reader.error(f"index {token!r} is out of range for {name} of shape "
                                   f"{list(tensor.shape)}", at)
        term = cache[token] = {(index_of[name], flat): 1.0}
        return term

    reader.resolve = resolve
    formula = Formula()
    while not reader.at_end():
        at, command = reader.command()
        if command == "vnnlib-version":
            token = reader.next()
            reader.expect(")")
            if version is not None or networks or formula.common or formula.disjuncts:
                raise reader.error("(vnnlib-version ...) must come first, once", at)
            version = token.strip("<>")
        elif command == "declare-network":
            if version is None:
                raise reader.error("a VNN-LIB 2.0 query starts with (vnnlib-version <2.0>)", at)
            if formula.common or formula.disjuncts is not None:
                raise reader.error("networks must be declared before the assertions", at)
            net = _read_network(reader, at, networks, tensors)
            for t in net.inputs + net.outputs:
                if t.name in by_name or any(t.name == n.name for n in networks):
                    raise reader.error(f"{t.name!r} is declared twice", at)
                t.offset = n_columns
                n_columns += t.size
                index_of[t.name] = len(tensors)
                by_name[t.name] = t
                tensors.append(t)
            networks.append(net)
        elif command == "assert":
            if not networks:
                raise reader.error("an assertion before any (declare-network ...)", at)
            reader.assertion(formula, at)
        elif command == "declare-const":
            raise reader.error("declare-const is VNN-LIB 1.0; a 2.0 query declares its "
                               "variables inside (declare-network ...)", at)
        else:
            raise reader.error(f"malformed VNN-LIB: unknown command {command!r}", at)
    if not networks:
        raise InputFileError(f"{where}: declares no network")

    for row in formula.common + [r for d in formula.disjuncts or () for r in d]:
        if len(row.coeffs) == (None in row.coeffs):
            raise reader.error("a constraint has no variable", row.at)
    return Query(path=where, version=version or "2.0", networks=networks, tensors=tensors,
                 n_columns=n_columns, _formula=formula, _reader=reader)


def _token_lines(reader: SyntaxReader) -> list[int]:
    """The line of every token, in one pass."""
    from vnnx.io.vnnlib_syntax import _TOKEN

    lines, line, last = [], 1, 0
    text = reader.text
    for match in _TOKEN.finditer(text):
        line += text.count("\n", last, match.start())
        last = match.start()
        lines.append(line)
    return lines


def _read_network(reader: SyntaxReader, at: int, networks: list[NetworkDecl],
                  tensors: list[TensorDecl]) -> NetworkDecl:
    name = reader.next()
    if not _NAME.match(name):
        raise reader.error(f"malformed VNN-LIB: {name!r} is not a network name", at)
    if any(n.name == name for n in networks):
        raise reader.error(f"network {name!r} is declared twice", at)
    net = NetworkDecl(name)
    while True:
        sub_at = reader.pos
        tok = reader.next()
        if tok == ")":
            break
        if tok != "(":
            raise reader.error(f"malformed VNN-LIB: expected '(' or ')' in network {name}, got "
                               f"{tok!r}", sub_at)
        what = reader.next()
        if what in ("equal-to", "isomorphic-to"):
            other = reader.next()
            reader.expect(")")
            if net.inputs or net.outputs or net.equal_to or net.isomorphic_to:
                raise reader.error(f"({what} ...) must come first in network {name}, once",
                                   sub_at)
            if not any(n.name == other for n in networks):
                raise reader.error(f"network {name} is {what} {other!r}, which is not declared "
                                   "before it", sub_at)
            setattr(net, what.replace("-", "_"), other)
        elif what in ("declare-input", "declare-output"):
            var, dtype, shape_tok = reader.next(), reader.next(), reader.next()
            shape = _parse_shape(shape_tok)
            if not _NAME.match(var) or not _NAME.match(dtype) or shape is None:
                raise reader.error(f"malformed VNN-LIB: expected ({what} NAME TYPE [d1,...]), "
                                   f"got {var!r} {dtype!r} {shape_tok!r}", sub_at)
            onnx_name = None
            if reader.tokens[reader.pos:reader.pos + 1] != [")"]:
                onnx_name = reader.next()
                if not (onnx_name.startswith('"') and onnx_name.endswith('"')
                        and len(onnx_name) >= 2):
                    raise reader.error(f"malformed VNN-LIB: expected an ONNX name in quotes, "
                                       f"got {onnx_name!r}", sub_at)
                onnx_name = onnx_name[1:-1]
            reader.expect(")")
            kind = what.split("-")[1]
            if kind == "input" and net.outputs:
                raise reader.error(f"network {name}: inputs must be declared before outputs",
                                   sub_at)
            tensor = TensorDecl(var, name, kind, dtype, shape, onnx_name, offset=0)
            (net.inputs if kind == "input" else net.outputs).append(tensor)
        elif what == "declare-hidden":
            raise reader.error("declare-hidden is not supported yet", sub_at)
        else:
            raise reader.error(f"malformed VNN-LIB: unknown declaration {what!r} in network "
                               f"{name}", sub_at)
    if not net.inputs or not net.outputs:
        raise reader.error(f"network {name} needs at least one declare-input and one "
                           "declare-output", at)
    related = net.equal_to or net.isomorphic_to
    if related:
        other = next(n for n in networks if n.name == related)
        shapes = [t.shape for t in net.inputs], [t.shape for t in net.outputs]
        if shapes != ([t.shape for t in other.inputs], [t.shape for t in other.outputs]):
            raise reader.error(f"network {name} is declared {('equal-to' if net.equal_to else 'isomorphic-to')} "
                               f"{related} but its tensor shapes differ", at)
    return net


def read_query(path: str | os.PathLike) -> Query:
    """Read a VNN-LIB 2.0 file (``.vnnlib`` or ``.vnnlib.gz``) into a :class:`Query`.

    Raises:
        InputFileError: missing/unreadable file, not a 2.0 file, or malformed text (one line,
            naming the line).
    """
    from vnnx.io.vnnlib import _read_text, vnnlib_version

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: VNN-LIB file not found")
    text = _read_text(path)
    version = vnnlib_version(text)
    if version is None or version.split(".")[0] != "2":
        raise InputFileError(f"{path}: not a VNN-LIB 2.0 file (no (vnnlib-version <2.0>) header)")
    return parse_query(text, str(path))


# --------------------------------------------------------------------------------------------
# Writing


def _term(coeff: float, var: str) -> str:
    from vnnx.io.vnnlib import _fmt

    if coeff == 1.0:
        return var
    if coeff == -1.0:
        return f"(- {var})"
    return f"(* {_fmt(coeff)} {var})"


def spec_to_vnnlib2(spec, input_shape: tuple[int, ...] | None = None,
                    output_shape: tuple[int, ...] | None = None, network: str = "N",
                    comment: str | None = None) -> str:
    """A single-network :class:`~vnnx.io.vnnlib.Spec` as VNN-LIB 2.0 text that reads back to the
    same Spec (numbers in shortest round-tripping positional notation).

    Args:
        spec: the spec.
        input_shape, output_shape: declared tensor shapes (default: flat ``[n]``); their sizes
            must match the spec's. Elements are indexed in C order.
        network: the network's name; its tensors are ``X`` and ``Y``.
        comment: first comment line.
    """
    from vnnx.io.vnnlib import _fmt

    in_shape = tuple(input_shape) if input_shape is not None else (spec.n_inputs,)
    out_shape = tuple(output_shape) if output_shape is not None else (spec.n_outputs,)
    if math.prod(in_shape) != spec.n_inputs or math.prod(out_shape) != spec.n_outputs:
        raise ShapeMismatchError(f"VNN-LIB 2.0 writer: shapes {list(in_shape)} / {list(out_shape)} do not "
                        f"hold {spec.n_inputs} inputs / {spec.n_outputs} outputs")
    x_names = [_element("X", in_shape, i) for i in range(spec.n_inputs)]
    y_names = [_element("Y", out_shape, j) for j in range(spec.n_outputs)]

    def box(prop) -> list[str]:
        return [part for i in range(spec.n_inputs)
                for part in (f"(<= {x_names[i]} {_fmt(prop.x_upper[i])})",
                             f"(>= {x_names[i]} {_fmt(prop.x_lower[i])})")]

    def rows(a: np.ndarray, b: np.ndarray) -> list[str]:
        out = []
        for r in range(a.shape[0]):
            terms = [_term(float(a[r, j]), y_names[j]) for j in np.flatnonzero(a[r])]
            if not terms:  # keep an all-zero row: 0 * Y <= b
                terms = [f"(* 0 {y_names[0]})"]
            lhs = terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"
            out.append(f"(<= {lhs} {_fmt(b[r])})")
        return out

    lines = [f"; {' '.join((comment or 'written by vnnx').split())}", "",
             "(vnnlib-version <2.0>)", "",
             f"(declare-network {network}",
             f"    (declare-input X real [{','.join(map(str, in_shape))}])",
             f"    (declare-output Y real [{','.join(map(str, out_shape))}]))", ""]
    if len(spec.properties) == 1:
        (prop,) = spec.properties
        lines += ["; Input constraints:"] + [f"(assert {c})" for c in box(prop)]
        lines += ["", "; Output constraints:"]
        if len(prop.clauses) == 1:
            lines += [f"(assert {c})" for c in rows(*prop.clauses[0])]
        else:
            lines += ["(assert (or"]
            lines += [f"    (and {' '.join(rows(a, b))})" for a, b in prop.clauses]
            lines += ["))"]
    else:
        # Several boxes: one disjunct per (box, clause), read back grouped by box.
        lines += ["(assert (or"]
        for prop in spec.properties:
            for a, b in prop.clauses:
                lines.append(f"    (and {' '.join(box(prop) + rows(a, b))})")
        lines += ["))"]
    return "\n".join(lines) + "\n"


def _element(name: str, shape: tuple[int, ...], flat: int) -> str:
    if len(shape) == 1:
        return f"{name}[{flat}]"
    return f"{name}[{','.join(str(int(i)) for i in np.unravel_index(flat, shape))}]"


def write_vnnlib2(path: str | os.PathLike, spec, **kwargs) -> None:
    """Write :func:`spec_to_vnnlib2` of ``spec`` atomically (``.gz``: compressed)."""
    from vnnx.io.vnnlib import _atomic_write_text

    _atomic_write_text(Path(path), spec_to_vnnlib2(spec, **kwargs))


def parse_network_list(text: str, where: str) -> list[tuple[str, str]]:
    """The first column of a VNN-COMP 2026 instances.csv: a Python-style list of (name, ONNX
    path) pairs, ``[('f', 'onnx/a.onnx'), ('g', 'onnx/b.onnx')]``. Raises
    :class:`InputFileError` naming ``where`` when it is anything else."""
    import ast

    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(s, str) and s for s in p)
                       for p in value)):
        raise InputFileError(f"{where}: expected a list of (name, onnx path) pairs, got {text.strip()[:80]!r}")
    return [(str(n), str(p)) for n, p in value]
