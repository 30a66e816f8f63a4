"""VNN-LIB 1.0 (the VNN-COMP dialect) and single-network 2.0 in and out, and VNN-COMP instance lists.

A VNN-LIB file states what a *counterexample* must satisfy: an input box and constraints on the
outputs. :func:`read_vnnlib` turns it into a :class:`Spec`: a disjunction over input boxes
(:class:`Property`), each paired with the output region that violates the property, written as a
disjunction of conjunctions ``A y <= b``. The network is safe on a property iff no ``x`` in its box
maps to a ``y`` in any of its clauses.

vnnx reads both versions itself (:mod:`vnnx.io.vnnlib_syntax` for the s-expressions,
:mod:`vnnx.io.vnnlib2` for 2.0's declarations and multi-network queries). For 1.0 it gives the
boxes and clauses PyPI vnnlib 0.0.1.post1's ``compat.read_vnnlib_simple`` gave, bit for bit
(``tests/fixtures/vnnlib_parse``), and refuses what that parser misread silently: constraints
coupling two inputs, unbounded inputs; top-level assertions may interleave inputs and outputs.

Example::

    spec = read_vnnlib("prop_1.vnnlib", n_inputs=5, n_outputs=5)
    prop = spec.properties[0]
    violates(prop, x, y)          # True iff (x, y) is a valid counterexample
"""
from __future__ import annotations

import csv
import gzip
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from vnnx.errors import ConfigError, InputFileError, ShapeMismatchError, VnnxError
from vnnx.io.vnnlib_syntax import Formula, Row, SyntaxReader
from vnnx.util import atomic_path

__all__ = [
    "Property",
    "Spec",
    "read_vnnlib",
    "vnnlib_version",
    "violates",
    "robustness_property",
    "write_robustness_spec",
    "write_instances_csv",
    "read_instances_csv",
]


@dataclass
class Property:
    """One input box and the output region that VIOLATES the property.

    Attributes:
        x_lower, x_upper: ``(n_inputs,)`` float64 bounds of the input box, flattened in C order,
            in model-input space (what the ONNX model receives).
        clauses: disjunction of conjunctions; clause ``(A, b)`` with ``A: (k, n_outputs)`` and
            ``b: (k,)`` holds for an output ``y`` iff ``A @ y <= b`` row-wise. A clause with
            ``k == 0`` holds for every ``y``.
    """

    x_lower: np.ndarray
    x_upper: np.ndarray
    clauses: list[tuple[np.ndarray, np.ndarray]]

    def __post_init__(self) -> None:
        self.x_lower = np.asarray(self.x_lower, dtype=np.float64).reshape(-1)
        self.x_upper = np.asarray(self.x_upper, dtype=np.float64).reshape(-1)
        if self.x_lower.shape != self.x_upper.shape:
            raise ShapeMismatchError(
                f"Property: x_lower has {self.x_lower.size} values, x_upper has {self.x_upper.size}"
            )
        clauses = []
        for i, (a, b) in enumerate(self.clauses):
            a = np.asarray(a, dtype=np.float64)
            b = np.asarray(b, dtype=np.float64).reshape(-1)
            if a.ndim != 2 or a.shape[0] != b.size:
                raise ShapeMismatchError(
                    f"Property clause {i}: A has shape {a.shape}, b has {b.size} values; "
                    "expected A: (k, n_outputs) and b: (k,)"
                )
            clauses.append((a, b))
        self.clauses = clauses

    @property
    def n_inputs(self) -> int:
        """Number of (flattened) input variables."""
        return int(self.x_lower.size)


@dataclass
class Spec:
    """A parsed VNN-LIB file: a disjunction of :class:`Property` (most files have exactly one).

    The spec is violated iff some property is violated.
    """

    path: str
    n_inputs: int
    n_outputs: int
    properties: list[Property]


# --------------------------------------------------------------------------------------------
# Reading


def _read_text(path: Path) -> str:
    """File contents as text; gzip is recognised by its magic bytes, not by the suffix."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: cannot read VNN-LIB file: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_INPUT_NAME = re.compile(r"X_(\d+)$")
_OUTPUT_NAME = re.compile(r"Y_(\d+)$")
_VERSION = re.compile(r"\(\s*vnnlib-version\s*<?\s*([0-9][0-9.]*)")
# Linear-term keys: (0, i) is input i, (1, j) is output j, None the constant; anything else is a
# variable the Spec form has no place for.
_IN, _OUT = 0, 1


def vnnlib_version(text: str) -> str | None:
    """The version in a ``(vnnlib-version <2.0>)`` header, or None (VNN-LIB 1.0 has none)."""
    match = _VERSION.search(text)
    return match.group(1) if match else None


def _name_v1(key) -> str:
    return f"{'X' if key[0] == _IN else 'Y'}_{key[1]}" if key[0] in (_IN, _OUT) else str(key[1])


def _check_rows(rows: list[Row], reader: SyntaxReader, name_of=_name_v1) -> None:
    """Every row must be a bound on one input or a constraint on outputs only: the Spec form has
    input boxes and output polytopes, so ``X_0 <= X_1`` cannot be read as two unrelated bounds."""
    for row in rows:
        inputs, has_output, other = [], False, None
        for key, value in row.coeffs.items():
            if key is None:
                continue
            if key[0] == _IN:
                inputs.append((key, value))
            elif key[0] == _OUT:
                has_output = True
            else:
                other = key
        if other is not None:
            raise reader.error(f"{name_of(other)}: only X_i and Y_j variables are supported in "
                               "constraints", row.at)
        if not inputs and not has_output:
            raise reader.error("a constraint has no X_i or Y_j variable", row.at)
        if inputs:
            if has_output:
                raise reader.error("a constraint mixes X and Y variables; only input boxes and "
                                   "output constraints are supported", row.at)
            if len(inputs) != 1:
                names = ", ".join(name_of(key) for key, _ in inputs)
                raise reader.error(f"a constraint couples inputs ({names}); only box "
                                   "constraints on single inputs are supported", row.at)
            if inputs[0][1] == 0:
                raise reader.error(f"a constraint on {name_of(inputs[0][0])} has coefficient 0",
                                   row.at)


def _apply_rows(rows: list[Row], lower: list, upper: list, out: list, n_out: int) -> None:
    """Tighten the box with the input rows, append ``(a, b)`` for the output rows.

    A bound is ``-c / v`` for the row ``v * x_i + c <= 0``, the arithmetic vnnlib.compat used."""
    for row in rows:
        coeffs = row.coeffs
        const = coeffs.get(None, 0.0)
        for key in coeffs:
            if key is not None:
                break
        if key[0] == _IN:
            i, v = key[1], coeffs[key]
            bound = -const / v
            if v > 0:
                if bound < upper[i]:
                    upper[i] = bound
            elif bound > lower[i]:
                lower[i] = bound
        else:
            a = [0.0] * n_out
            for k, v in coeffs.items():
                if k is not None:
                    a[k[1]] = v
            out.append((a, -const + 0.0))


def _spec_from_formula(formula: Formula, reader: SyntaxReader, declared_in: int,
                       declared_out: int, n_inputs: int | None, n_outputs: int | None,
                       name_of=_name_v1) -> Spec:
    """Checks, then boxes and clauses: one property per distinct box, in order of appearance;
    a clause is the common output rows followed by its disjunct's output rows."""
    where = reader.where
    _check_rows(formula.common, reader, name_of)
    for disjunct in formula.disjuncts or ():
        _check_rows(disjunct, reader, name_of)
    if declared_in == 0:
        raise InputFileError(f"{where}: declares no input variables X_i")
    if declared_out == 0:
        raise InputFileError(f"{where}: declares no output variables Y_j")
    for what, given, declared in (("inputs", n_inputs, declared_in),
                                  ("outputs", n_outputs, declared_out)):
        if given is not None and int(given) != declared:
            raise ShapeMismatchError(
                f"{where}: spec declares {declared} {what}, network has {int(given)}"
            )
    lower0, upper0 = [-math.inf] * declared_in, [math.inf] * declared_in
    common_out: list = []
    _apply_rows(formula.common, lower0, upper0, common_out, declared_out)
    groups: dict[tuple, list] = {}
    for disjunct in (formula.disjuncts if formula.disjuncts is not None else [[]]):
        lower, upper, out = list(lower0), list(upper0), list(common_out)
        _apply_rows(disjunct, lower, upper, out, declared_out)
        groups.setdefault((tuple(lower), tuple(upper)), [lower, upper, []])[2].append(out)

    properties = []
    first_empty = ""
    for lower, upper, clause_rows in groups.values():
        lower = np.asarray(lower, dtype=np.float64) + 0.0  # + 0.0: no -0.0 bounds
        upper = np.asarray(upper, dtype=np.float64) + 0.0
        unbounded = np.flatnonzero(~np.isfinite(lower) | ~np.isfinite(upper))
        if unbounded.size:
            raise InputFileError(
                f"{where}: input {name_of((_IN, int(unbounded[0])))} has no finite lower and "
                f"upper bound ({unbounded.size} unbounded input(s))"
            )
        empty = np.flatnonzero(lower > upper)
        if empty.size:
            # An empty box adds nothing to the disjunction; only a spec with no box left is
            # treated as a broken file.
            i = int(empty[0])
            first_empty = first_empty or (
                f"{where}: input {name_of((_IN, i))} has an empty range [{float(lower[i])!r}, "
                f"{float(upper[i])!r}]"
            )
            continue
        clauses = []
        for rows in clause_rows:
            a = np.array([r for r, _ in rows], dtype=np.float64).reshape(-1, declared_out)
            clauses.append((a, np.array([b for _, b in rows], dtype=np.float64)))
        properties.append(Property(lower, upper, clauses))
    if not properties:
        raise InputFileError(first_empty or f"{where}: no input box")
    return Spec(path=where, n_inputs=declared_in, n_outputs=declared_out, properties=properties)


def _read_v1(text: str, where: str, n_inputs: int | None, n_outputs: int | None) -> Spec:
    """VNN-LIB 1.0: ``declare-const`` of ``X_i`` / ``Y_j`` (Real) and assertions."""
    reader = SyntaxReader(text, where)
    declared: dict[str, dict] = {}
    declared_in = declared_out = 0

    def resolve(token: str, at: int) -> dict:
        term = declared.get(token)
        if term is None:
            raise reader.error(f"malformed VNN-LIB: undeclared identifier {token!r}", at)
        return term

    reader.resolve = resolve
    formula = Formula()
    while not reader.at_end():
        at, command = reader.command()
        if command == "assert":
            reader.assertion(formula, at)
        elif command == "declare-const":
            name, sort = reader.next(), reader.next()
            reader.expect(")")
            if name in "()" or sort in "()":
                raise reader.error("malformed VNN-LIB: expected (declare-const NAME Real)", at)
            if sort not in ("Real", "Int"):
                raise reader.error(f"unsupported sort {sort!r} of {name!r} (expected Real)", at)
            if name in declared:
                raise reader.error(f"{name!r} is declared twice", at)
            if match := _INPUT_NAME.match(name):
                index = int(match.group(1))
                declared[name] = {(_IN, index): 1.0}
                declared_in = max(declared_in, index + 1)
            elif match := _OUTPUT_NAME.match(name):
                index = int(match.group(1))
                declared[name] = {(_OUT, index): 1.0}
                declared_out = max(declared_out, index + 1)
            else:
                declared[name] = {("other", name): 1.0}
        elif command == "vnnlib-version":
            reader.skip_to_close()
        else:
            raise reader.error(f"malformed VNN-LIB: unknown command {command!r}", at)
    return _spec_from_formula(formula, reader, declared_in, declared_out, n_inputs, n_outputs)


def read_vnnlib(path: str | os.PathLike, n_inputs: int | None = None,
                n_outputs: int | None = None) -> Spec:
    """Read a VNN-LIB 1.0 or 2.0 file (``.vnnlib`` or ``.vnnlib.gz``) into a :class:`Spec`.

    The version is taken from the ``(vnnlib-version <2.0>)`` header (none: 1.0). A 2.0 query must
    declare one network with one input and one output tensor (flattened in C order); see
    :func:`vnnx.io.vnnlib2.read_query` for the multi-network form.

    Args:
        path: the file.
        n_inputs, n_outputs: the network's flattened input/output sizes. When given they must
            equal the number of declared ``X_i`` / ``Y_j`` (largest index + 1; for 2.0 the
            declared shapes' sizes); when ``None`` they are taken from the declarations.

    Returns:
        A :class:`Spec` whose properties hold ``(n_inputs,)`` float64 boxes and clauses with
        ``A: (k, n_outputs)``. Strict comparisons ``<`` / ``>`` are read as ``<=`` / ``>=``.

    Raises:
        InputFileError: missing/unreadable file, malformed text (one line, naming the line),
            constraints outside the supported fragment, or an unbounded/empty input box.
        ShapeMismatchError: declared sizes differ from ``n_inputs`` / ``n_outputs``.
        MultiNetworkQueryError: a 2.0 query over several networks.
    """
    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, not a VNN-LIB file")
    if not path.is_file():
        raise InputFileError(f"{path}: VNN-LIB file not found")
    text = _read_text(path)
    where = str(path)
    version = vnnlib_version(text)
    if version is None or version.split(".")[0] == "1":
        return _read_v1(text, where, n_inputs, n_outputs)
    if version.split(".")[0] == "2":
        from vnnx.io.vnnlib2 import parse_query

        return parse_query(text, where).to_spec(n_inputs, n_outputs)
    raise InputFileError(f"{where}: VNN-LIB {version} is not supported (vnnx reads VNN-LIB 1.0 "
                         "and 2.0)")


def violates(prop: Property, x: np.ndarray, y: np.ndarray, tol: float = 0.0) -> bool:
    """Whether ``(x, y)`` is a counterexample to ``prop``.

    Args:
        prop: the property.
        x: an input, any shape with ``n_inputs`` values (flattened in C order).
        y: the network's output on ``x``, any shape with ``n_outputs`` values.
        tol: absolute slack allowed on every inequality (box and ``A y <= b``), to accept
            counterexamples found in floating point; 0 means exact.

    Returns:
        True iff ``x`` lies in the box and ``y`` satisfies some clause. Non-finite values never
        count as a counterexample.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.size != prop.x_lower.size:
        raise ShapeMismatchError(
            f"counterexample x has {x.size} values, the property has {prop.x_lower.size} inputs"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return False
    if not (np.all(x >= prop.x_lower - tol) and np.all(x <= prop.x_upper + tol)):
        return False
    for a, b in prop.clauses:
        if a.shape[1] != y.size:
            raise ShapeMismatchError(
                f"output y has {y.size} values, the property has {a.shape[1]} outputs"
            )
        if np.all(a @ y <= b + tol):
            return True
    return False


# --------------------------------------------------------------------------------------------
# Writing


def robustness_property(x: np.ndarray, epsilon: float, label: int, n_outputs: int,
                        clip: tuple[float, float] | None = (0.0, 1.0)) -> Property:
    """The L-infinity local-robustness property around ``x``, as :func:`write_robustness_spec`
    writes it.

    Args:
        x: the reference input, any shape, flattened in C order, in model-input space.
        epsilon: radius (same units as ``x``), >= 0.
        label: the true class, ``0 <= label < n_outputs``.
        n_outputs: number of logits (>= 2).
        clip: valid input range ``(lo, hi)`` the box is intersected with, or None.

    Returns:
        A :class:`Property` with box ``[max(x - eps, lo), min(x + eps, hi)]`` and one clause per
        ``j != label``: ``y_label - y_j <= 0`` (some other logit is at least the true one).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    epsilon = float(epsilon)
    if not np.all(np.isfinite(x)):
        raise VnnxError("robustness property: x has non-finite values")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ConfigError(f"robustness property: epsilon must be finite and >= 0, got {epsilon!r}")
    n_outputs = int(n_outputs)
    if n_outputs < 2:
        raise ConfigError(f"robustness property: needs at least 2 outputs, got {n_outputs}")
    if not (0 <= int(label) < n_outputs) or int(label) != label:
        raise ConfigError(f"robustness property: label {label!r} is not in 0..{n_outputs - 1}")
    label = int(label)
    lower, upper = x - epsilon, x + epsilon
    if clip is not None:
        lo, hi = float(clip[0]), float(clip[1])
        if not lo <= hi:
            raise ConfigError(f"robustness property: clip range ({lo!r}, {hi!r}) is empty")
        outside = np.flatnonzero((x < lo) | (x > hi))
        if outside.size:
            i = outside[0]
            raise ConfigError(
                f"robustness property: x[{i}] = {x[i]!r} lies outside the clip range "
                f"({lo!r}, {hi!r}); is x in model-input space?"
            )
        lower, upper = np.maximum(lower, lo), np.minimum(upper, hi)
    clauses = []
    for j in range(n_outputs):
        if j != label:
            a = np.zeros((1, n_outputs))
            a[0, label], a[0, j] = 1.0, -1.0
            clauses.append((a, np.zeros(1)))
    return Property(lower, upper, clauses)


def _fmt(value: float) -> str:
    # Positional notation: VNN-LIB tools in the wild (and SMT-LIB) reject "1e-05"; the shortest
    # round-tripping digits keep read(write(x)) == x exactly. "+ 0.0" turns -0.0 into 0.0.
    return np.format_float_positional(float(value) + 0.0, unique=True, trim="0")


def write_robustness_spec(path: str | os.PathLike, x: np.ndarray, epsilon: float, label: int,
                          n_outputs: int, clip: tuple[float, float] | None = (0.0, 1.0), *,
                          comment: str | None = None, version: str = "1.0") -> None:
    """Write the L-infinity robustness property around ``x`` as VNN-LIB, atomically.

    Version ``"1.0"`` follows the VNN-COMP mnistfc specs: ``declare-const`` for every ``X_i`` and
    ``Y_j``, two bound assertions per input, and ``(assert (or (and (>= Y_j Y_label)) ...))``.
    Version ``"2.0"`` declares one network ``N`` with tensors ``X`` (shape ``[n_inputs]``) and
    ``Y`` (``[n_outputs]``) and writes the same assertions over ``X[i]`` / ``Y[j]``; both read
    back to the same :class:`Spec`. A path ending in ``.gz`` is gzip-compressed. Other arguments
    are those of :func:`robustness_property`; ``comment`` replaces the first comment line.

    Example::

        write_robustness_spec("prop_0_0.03.vnnlib", x_test[0].ravel(), 0.03, int(y_test[0]), 10)
    """
    if version not in ("1.0", "2.0"):
        raise ConfigError(f"VNN-LIB version {version!r}: vnnx writes 1.0 and 2.0")
    prop = robustness_property(x, epsilon, label, n_outputs, clip)
    label = int(label)
    n_in = prop.n_inputs
    if comment is None:
        comment = f"Robustness property with label: {label}, epsilon: {_fmt(epsilon)}."
    lines = [f"; {' '.join(comment.split())}", ""]
    if version == "1.0":
        x_name, y_name = "X_{}".format, "Y_{}".format
        lines += [f"(declare-const X_{i} Real)" for i in range(n_in)]
        lines += ["", ""]
        lines += [f"(declare-const Y_{j} Real)" for j in range(int(n_outputs))]
        disjunct = "    (and (>= {} {}))"
    else:
        x_name, y_name = "X[{}]".format, "Y[{}]".format
        lines += ["(vnnlib-version <2.0>)", "", "(declare-network N",
                  f"    (declare-input X real [{n_in}])",
                  f"    (declare-output Y real [{int(n_outputs)}]))"]
        disjunct = "    (>= {} {})"
    lines += ["", "; Input constraints:"]
    for i in range(n_in):
        lines += [f"(assert (<= {x_name(i)} {_fmt(prop.x_upper[i])}))",
                  f"(assert (>= {x_name(i)} {_fmt(prop.x_lower[i])}))", ""]
    lines += ["", "; Output constraints:", "(assert (or"]
    lines += [disjunct.format(y_name(j), y_name(label)) for j in range(int(n_outputs))
              if j != label]
    lines += ["))", ""]
    _atomic_write_text(Path(path), "\n".join(lines))


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that readers never see a half-written file; ``.gz`` paths are
    compressed (with a fixed mtime, so equal specs give equal bytes)."""
    data = text.encode("utf-8")
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# --------------------------------------------------------------------------------------------
# VNN-COMP instance lists: "onnx,vnnlib,timeout" per line, no header.


def _fmt_timeout(timeout: float) -> str:
    t = float(timeout)
    return str(int(t)) if t.is_integer() else repr(t)


def write_instances_csv(path: str | os.PathLike,
                        rows: Iterable[Sequence[str | os.PathLike | float]]) -> None:
    """Write a VNN-COMP instances list atomically: one ``onnx,vnnlib,timeout`` line per row, no
    header. Paths are written as given (VNN-COMP resolves them relative to the csv's
    directory); ``timeout`` is in seconds, written as an integer when it is one.
    """
    lines = []
    for n, row in enumerate(rows, start=1):
        if len(row) != 3:
            raise ConfigError(f"{path}: instance row {n} has {len(row)} fields, expected "
                              "(onnx, vnnlib, timeout)")
        onnx_path, vnnlib_path, timeout = str(row[0]), str(row[1]), row[2]
        for p in (onnx_path, vnnlib_path):
            if not p or any(c in p for c in ",\n\r"):
                raise ConfigError(f"{path}: instance row {n}: path {p!r} is empty or contains "
                                  "a comma or newline")
        try:
            t = float(timeout)
        except (TypeError, ValueError):
            t = float("nan")
        if not (math.isfinite(t) and t > 0):
            raise ConfigError(f"{path}: instance row {n}: timeout {timeout!r} is not a positive "
                              "number of seconds")
        lines.append(f"{onnx_path},{vnnlib_path},{_fmt_timeout(t)}\n")
    _atomic_write_text(Path(path), "".join(lines))


def read_instances_csv(path: str | os.PathLike) -> list[tuple[Path, Path, float]]:
    """Read a VNN-COMP instances list.

    The first column is one ONNX path, or (VNN-COMP 2026, multi-network VNN-LIB 2.0 queries) a
    quoted list of (name, path) pairs, ``"[('f', 'onnx/a.onnx'), ('g', 'onnx/a.onnx')]"``; for
    that form ``onnx_path`` is the same list as a string, its paths resolved (what
    ``vnnx verify --onnx`` accepts).

    Returns:
        ``[(onnx_path, vnnlib_path, timeout_seconds), ...]`` with relative paths resolved
        against the csv's directory (normalised, e.g. ``./specs/a`` -> ``specs/a``). Whether the
        files exist is not checked here. Blank lines and ``#`` comment lines are skipped, as
        VNN-COMP's tooling does.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: instances csv not found")
    text = _read_text(path)
    base = path.parent
    result = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        # The 2026 form quotes its first column, a list of (name, path) pairs with commas.
        fields = [f.strip() for f in next(csv.reader([line], skipinitialspace=True))]
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise InputFileError(f"{path}, line {n}: expected 'onnx,vnnlib,timeout', got {line!r}")
        try:
            timeout = float(fields[2])
        except ValueError:
            timeout = float("nan")
        if not (math.isfinite(timeout) and timeout > 0):
            raise InputFileError(f"{path}, line {n}: timeout {fields[2]!r} is not a positive "
                                 "number of seconds")
        onnx_path, vnnlib_path = (Path(os.path.normpath(base / f)) for f in fields[:2])
        if fields[0].startswith("["):
            from vnnx.io.vnnlib2 import parse_network_list

            pairs = parse_network_list(fields[0], f"{path}, line {n}")
            onnx_path = repr([(name, os.path.normpath(base / p)) for name, p in pairs])
        result.append((onnx_path, vnnlib_path, timeout))
    return result
