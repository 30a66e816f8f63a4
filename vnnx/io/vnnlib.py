"""VNN-LIB 1 (the VNN-COMP dialect) in and out, and VNN-COMP instance lists.

A VNN-LIB file states what a *counterexample* must satisfy: an input box and constraints on the
outputs. :func:`read_vnnlib` turns it into a :class:`Spec`: a disjunction over input boxes
(:class:`Property`), each paired with the output region that violates the property, written as a
disjunction of conjunctions ``A y <= b``. The network is safe on a property iff no ``x`` in its box
maps to a ``y`` in any of its clauses.

Parsing goes through ``vnnlib.compat`` (the reference VNN-COMP parser, ``read_vnnlib_simple``),
with checks added for the inputs it would otherwise misread silently (constraints coupling two
inputs, unbounded inputs) and a fix for top-level assertions that interleave inputs and outputs.

Example::

    spec = read_vnnlib("prop_1.vnnlib", n_inputs=5, n_outputs=5)
    prop = spec.properties[0]
    violates(prop, x, y)          # True iff (x, y) is a valid counterexample
"""
from __future__ import annotations

import gzip
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from vnnx.errors import ConfigError, InputFileError, ShapeMismatchError, VnnxError
from vnnx.util import atomic_path

__all__ = [
    "Property",
    "Spec",
    "read_vnnlib",
    "violates",
    "robustness_property",
    "write_robustness_spec",
    "write_instances_csv",
    "read_instances_csv",
]

# Variable kinds in vnnlib.compat's row encoding: (row, kind, index) -> coefficient.
_CONST, _INPUT, _OUTPUT = -1, 0, 1


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


def _group_rows(entries: dict) -> dict[int, dict[tuple[int, int], float]]:
    rows: dict[int, dict[tuple[int, int], float]] = {}
    for (row, kind, index), value in entries.items():
        rows.setdefault(row, {})[(kind, index)] = value
    return rows


def _check_rows(rows: dict[int, dict[tuple[int, int], float]], where: str) -> None:
    """Reject constraints vnnlib.compat would misread: it treats every input row as a bound on
    one variable, so ``X_0 <= X_1`` would silently become two unrelated bounds."""
    for terms in rows.values():
        kinds = {kind for kind, _ in terms if kind != _CONST}
        unknown = kinds - {_INPUT, _OUTPUT}
        if unknown:
            raise InputFileError(
                f"{where}: only X_i and Y_j variables are supported in constraints"
            )
        if not kinds:
            raise InputFileError(f"{where}: a constraint has no X_i or Y_j variable")
        if _INPUT in kinds:
            inputs = [(idx, v) for (kind, idx), v in terms.items() if kind == _INPUT]
            if _OUTPUT in kinds:
                raise InputFileError(
                    f"{where}: a constraint mixes X and Y variables; only input boxes and "
                    "output constraints are supported"
                )
            if len(inputs) == 1 and inputs[0][1] == 0:
                raise InputFileError(
                    f"{where}: a constraint on X_{inputs[0][0]} has coefficient 0"
                )
            if len(inputs) != 1:
                names = ", ".join(f"X_{idx}" for idx, _ in inputs)
                raise InputFileError(
                    f"{where}: a constraint couples inputs ({names}); only box constraints "
                    "on single inputs are supported"
                )


# A numeric literal: optional sign, digits with an optional fraction, or a bare fraction (.1),
# optional exponent.
_NUMBER = re.compile(r"([+-]?)(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def _normalise(text: str) -> str:
    """Rewrite what VNN-COMP files use but vnnlib.compat rejects into the forms it reads:

    * numbers with a leading ``+`` or a bare fraction (``+3e-1``, ``.1``, ``-.5``);
    * strict comparisons ``<`` / ``>``, read as ``<=`` / ``>=`` (as VNN-COMP's checkers do,
      which compare with a tolerance anyway);
    * equalities ``(= a b)`` and ``(== a b)``, read as ``(<= a b)`` and ``(>= a b)`` joined by
      ``and`` (spliced into an enclosing ``and``).

    The text is read as s-expressions (comments dropped) and written back in the same order.
    """
    tokens = _TOKEN.findall("\n".join(line.split(";", 1)[0] for line in text.splitlines()))
    stack: list[list] = [[]]
    for tok in tokens:
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise InputFileError("unbalanced parentheses: ')' without '('")
            node = stack.pop()
            stack[-1].append(node)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise InputFileError("unbalanced parentheses: '(' without ')'")
    return "\n".join(_write_sexpr(_rewrite(node)) for node in stack[0])


def _rewrite(node):
    if isinstance(node, str):
        m = _NUMBER.fullmatch(node)
        if m is None:
            return node
        sign, digits = m.groups()
        return ("-" if sign == "-" else "") + ("0" if digits.startswith(".") else "") + digits
    if not node:
        return node
    head, args = node[0], [_rewrite(a) for a in node[1:]]
    if head in ("=", "=="):
        if len(args) != 2:
            raise InputFileError(f"an equality needs two arguments, got {len(args)}")
        return ["and", ["<=", *args], [">=", *args]]
    head = {"<": "<=", ">": ">="}.get(head, head) if isinstance(head, str) else _rewrite(head)
    if head == "and":
        flat = []
        for a in args:
            flat.extend(a[1:] if isinstance(a, list) and a and a[0] == "and" else [a])
        args = flat
    return [head, *args]


def _write_sexpr(node) -> str:
    if isinstance(node, str):
        return node
    return "(" + " ".join(_write_sexpr(n) for n in node) + ")"


def _make_transformer(where: str):
    from vnnlib.compat import CompatTransformer

    class _CheckedTransformer(CompatTransformer):
        def transform_Script(self, *commands):  # noqa: N802 (library hook name)
            # Top-level assertions form one conjunction, so their order is free. compat assumes
            # the output rows are contiguous (it indexes them as row - min(row)); put input rows
            # first so that files interleaving X and Y assertions are read correctly.
            rows = _group_rows(self._assertions)
            order = sorted(rows, key=lambda r: (any(k == _OUTPUT for k, _ in rows[r]), r))
            renumber = {old: new for new, old in enumerate(order)}
            self._assertions = {
                (renumber[row], kind, idx): v for (row, kind, idx), v in self._assertions.items()
            }
            _check_rows(rows, where)
            for disjunct in self._disjunctions:
                _check_rows(_group_rows(disjunct), where)
            return super().transform_Script(*commands)

    # Always infer the sizes from the declarations so that they can be checked against the
    # network's, instead of letting a mismatch pass or fail obscurely.
    return _CheckedTransformer("X", "Y", None, None)


def read_vnnlib(path: str | os.PathLike, n_inputs: int | None = None,
                n_outputs: int | None = None) -> Spec:
    """Read a VNN-LIB 1 file (``.vnnlib`` or ``.vnnlib.gz``).

    Args:
        path: the file.
        n_inputs, n_outputs: the network's flattened input/output sizes. When given they must
            equal the number of declared ``X_i`` / ``Y_j`` (largest index + 1); when ``None``
            they are taken from the declarations.

    Returns:
        A :class:`Spec` whose properties hold ``(n_inputs,)`` float64 boxes and clauses with
        ``A: (k, n_outputs)``.

    Raises:
        InputFileError: missing/unreadable file, malformed text (the parser's complaint, one
            line), constraints outside the supported fragment, or an unbounded/empty input box.
        ShapeMismatchError: declared sizes differ from ``n_inputs`` / ``n_outputs``.
    """
    from vnnlib.errors import VnnLibError
    from vnnlib.parser import VnnLibParser

    path = Path(path)
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, not a VNN-LIB file")
    if not path.is_file():
        raise InputFileError(f"{path}: VNN-LIB file not found")
    text = _read_text(path)
    where = str(path)
    version = re.search(r"\(\s*vnnlib-version\s*<?\s*([0-9.]+)", text)
    if version and not version.group(1).startswith("1"):
        raise InputFileError(f"{where}: VNN-LIB {version.group(1)} is not supported yet (vnnx reads VNN-LIB 1.0, "
                             "the VNN-COMP dialect)")
    transformer = _make_transformer(where)
    try:
        text = _normalise(text)
    except InputFileError as exc:
        raise InputFileError(f"{where}: malformed VNN-LIB: {exc}") from None
    try:
        with warnings.catch_warnings():
            # VNN-COMP files write "-0.5" for (- 0.5); the parser warns on each one.
            warnings.simplefilter("ignore")
            ast = VnnLibParser.parse(text, strict=False)
            boxes = transformer.transform(ast)
    except VnnxError:
        raise
    except (VnnLibError, StopIteration, AssertionError, NotImplementedError, RuntimeError,
            ValueError, KeyError, IndexError, TypeError, ZeroDivisionError) as exc:
        raise InputFileError(f"{where}: malformed VNN-LIB: {_one_line(exc)}") from exc

    declared_in, declared_out = transformer.input_size, transformer.output_size
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

    properties = []
    first_empty = ""
    for box, polytopes in boxes:
        bounds = np.asarray(box, dtype=np.float64).reshape(declared_in, 2)
        lower, upper = bounds[:, 0] + 0.0, bounds[:, 1] + 0.0  # + 0.0: no -0.0 bounds
        unbounded = np.flatnonzero(~np.isfinite(lower) | ~np.isfinite(upper))
        if unbounded.size:
            raise InputFileError(
                f"{where}: input X_{unbounded[0]} has no finite lower and upper bound "
                f"({unbounded.size} unbounded input(s))"
            )
        empty = np.flatnonzero(lower > upper)
        if empty.size:
            # An empty box adds nothing to the disjunction; only a spec with no box left is
            # treated as a broken file.
            i = int(empty[0])
            first_empty = first_empty or (
                f"{where}: input X_{i} has an empty range [{float(lower[i])!r}, "
                f"{float(upper[i])!r}]"
            )
            continue
        clauses = []
        for a, b in polytopes:
            a = np.asarray(a, dtype=np.float64).reshape(-1, declared_out)
            clauses.append((a, np.asarray(b, dtype=np.float64).reshape(-1)))
        properties.append(Property(lower, upper, clauses))
    if not properties:
        raise InputFileError(first_empty or f"{where}: no input box")
    return Spec(path=where, n_inputs=declared_in, n_outputs=declared_out, properties=properties)


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
                          comment: str | None = None) -> None:
    """Write the L-infinity robustness property around ``x`` as VNN-LIB, atomically.

    The layout follows the VNN-COMP mnistfc specs: ``declare-const`` for every ``X_i`` and
    ``Y_j``, two bound assertions per input, and ``(assert (or (and (>= Y_j Y_label)) ...))``.
    A path ending in ``.gz`` is gzip-compressed. Arguments are those of
    :func:`robustness_property`; ``comment`` replaces the first comment line.

    Example::

        write_robustness_spec("prop_0_0.03.vnnlib", x_test[0].ravel(), 0.03, int(y_test[0]), 10)
    """
    prop = robustness_property(x, epsilon, label, n_outputs, clip)
    label = int(label)
    n_in = prop.n_inputs
    if comment is None:
        comment = f"Robustness property with label: {label}, epsilon: {_fmt(epsilon)}."
    lines = [f"; {' '.join(comment.split())}", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += ["", ""]
    lines += [f"(declare-const Y_{j} Real)" for j in range(int(n_outputs))]
    lines += ["", "; Input constraints:"]
    for i in range(n_in):
        lines += [f"(assert (<= X_{i} {_fmt(prop.x_upper[i])}))",
                  f"(assert (>= X_{i} {_fmt(prop.x_lower[i])}))", ""]
    lines += ["", "; Output constraints:", "(assert (or"]
    lines += [f"    (and (>= Y_{j} Y_{label}))" for j in range(int(n_outputs)) if j != label]
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
        fields = [f.strip() for f in line.split(",")]
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
        result.append((onnx_path, vnnlib_path, timeout))
    return result
