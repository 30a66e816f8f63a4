"""The s-expression layer shared by the VNN-LIB 1.0 and 2.0 readers: tokens, linear terms, and
assertions collected as one conjunction of rows plus one disjunction of conjunctions.

A *row* is a linear constraint ``sum_k coeffs[k] * v_k + coeffs[None] <= 0`` (``< 0`` when
``strict``); the keys of ``coeffs`` are whatever the version-specific reader resolves an identifier
to (``(0, i)`` for ``X_i``, ``(1, j)`` for ``Y_j``, ...), ``None`` is the constant term. The
arithmetic is done in the order PyPI vnnlib 0.0.1.post1's ``compat`` did it (``<=`` is
``lhs - rhs``, ``>=`` is ``rhs - lhs``), so VNN-LIB 1.0 files give bit-identical bounds.

Assertions are read as VNN-COMP writes them: comparisons, ``and`` of comparisons, and ``or`` of
comparisons or of such ``and``\\ s. Top-level assertions form one conjunction; each top-level
``or`` with several disjuncts multiplies the disjunction (rows of the later ``or`` first).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from vnnx.errors import InputFileError

__all__ = ["Row", "Formula", "SyntaxReader", "NUMBER"]

_COMMENT = re.compile(r";[^\n]*")
# "(", ")", a quoted ONNX name, a bracketed shape, a symbol with an optional [index] glued to it,
# or a stray quote/bracket (which then fails as an identifier, naming its line).
_TOKEN = re.compile(r'[()]|"[^"\n]*"|\[[^\]]*\]|[^\s()";\[]+(?:\[[^\]]*\])?|["\[]')
# Numbers VNN-COMP files use: +3e-1, .1, -.5, 1., 2E-1.
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_COMPARISONS = {"<=": False, ">=": False, "<": True, ">": True}
# More disjuncts than this after multiplying top-level disjunctions is refused, not enumerated.
MAX_DISJUNCTS = 100_000


@dataclass
class Row:
    """``sum coeffs[k] * v_k + coeffs[None] <= 0`` (``< 0`` if ``strict``); ``at`` is the token
    index of the comparison, for error messages."""

    coeffs: dict
    strict: bool
    at: int


@dataclass
class Formula:
    """The conjunction of all assertions: ``common`` rows and, when some assertion is an ``or`` of
    several disjuncts, ``disjuncts`` (one of them must hold too). ``disjuncts is None`` means
    "no disjunction" (one implicit empty disjunct)."""

    common: list[Row] = field(default_factory=list)
    disjuncts: list[list[Row]] | None = None

    def add(self, kind: str, payload) -> None:
        if kind == "cmp":
            self.common.append(payload)
        elif kind == "and":
            self.common.extend(payload)
        elif len(payload) == 1:       # (or X): just X
            self.common.extend(payload[0])
        elif self.disjuncts is None:
            self.disjuncts = [list(d) for d in payload]
        else:
            if len(payload) * len(self.disjuncts) > MAX_DISJUNCTS:
                raise ValueError(f"more than {MAX_DISJUNCTS} disjuncts after multiplying the "
                                 "top-level disjunctions")
            self.disjuncts = [new + old for new in payload for old in self.disjuncts]


class SyntaxReader:
    """Tokens of one file and a cursor over them; errors name the file and the line.

    ``resolve(token, at)`` turns an identifier token into its linear term (a dict that is never
    mutated) or raises through :meth:`error`.
    """

    def __init__(self, text: str, where: str) -> None:
        self.text = _COMMENT.sub("", text) if ";" in text else text
        self.tokens: list[str] = _TOKEN.findall(self.text)
        self.pos = 0
        self.where = where
        self.resolve: Callable[[str, int], dict] = self._no_identifiers

    # ---------------------------------------------------------------- errors and cursor
    def line_of(self, at: int) -> int:
        """1-based line of token ``at`` (the last line for the end of the file)."""
        if at >= len(self.tokens):
            return self.text.count("\n") + (0 if self.text.endswith("\n") else 1) or 1
        for i, match in enumerate(_TOKEN.finditer(self.text)):
            if i == at:
                return self.text.count("\n", 0, match.start()) + 1
        return 1  # pragma: no cover - at < len(tokens)

    def error(self, message: str, at: int | None = None) -> InputFileError:
        line = self.line_of(self.pos if at is None else at)
        return InputFileError(f"{self.where}, line {line}: {message}")

    def next(self) -> str:
        try:
            tok = self.tokens[self.pos]
        except IndexError:
            raise self.error("malformed VNN-LIB: unexpected end of file "
                             "(unbalanced parentheses: '(' without ')')") from None
        self.pos += 1
        return tok

    def expect(self, want: str) -> None:
        tok = self.next()
        if tok != want:
            self.pos -= 1
            raise self.error(f"malformed VNN-LIB: expected {want!r}, got {tok!r}")

    def at_end(self) -> bool:
        return self.pos >= len(self.tokens)

    def command(self) -> tuple[int, str]:
        """Open the next top-level command: ``(position of its '(', its name)``."""
        at = self.pos
        if self.next() != "(":
            raise self.error("malformed VNN-LIB: expected '(' (unbalanced parentheses: ')' without '(')", at)
        return at, self.next()

    def assertion(self, formula: "Formula", at: int) -> None:
        """The rest of an ``(assert ...)`` command, added to ``formula``."""
        kind, payload = self.boolean()
        try:
            formula.add(kind, payload)
        except ValueError as exc:
            raise self.error(str(exc), at) from None
        self.expect(")")

    def skip_to_close(self) -> None:
        """Skip the rest of the current (already opened) list, nested lists included."""
        depth = 1
        while depth:
            tok = self.next()
            if tok == "(":
                depth += 1
            elif tok == ")":
                depth -= 1

    def _no_identifiers(self, token: str, at: int) -> dict:
        raise self.error(f"malformed VNN-LIB: undeclared identifier {token!r}", at)

    # ---------------------------------------------------------------- terms
    def arith(self) -> dict:
        """A linear term: number, identifier, or (+ ...), (- ...), (* ...)."""
        at = self.pos
        tok = self.next()
        if tok == "(":
            op = self.next()
            args = []
            while self.tokens[self.pos:self.pos + 1] != [")"]:
                args.append(self.arith())
            self.pos += 1
            if op == "+" and args:
                result: dict = {}
                for term in args:
                    for key, value in term.items():
                        result[key] = result.get(key, 0.0) + value
                return result
            if op == "-" and args:
                if len(args) == 1:
                    return {key: -value for key, value in args[0].items()}
                result = dict(args[0])
                for term in args[1:]:
                    for key, value in term.items():
                        result[key] = result.get(key, 0.0) - value
                return result
            if op == "*" and args:
                variable = [t for t in args if len(t) > 1 or None not in t]
                if len(variable) > 1:
                    raise self.error("nonlinear product: '*' needs constant factors but one",
                                     at)
                base = variable[0] if variable else args[0]
                result = dict(base)
                for term in args:
                    if term is base:
                        continue
                    const = term[None]
                    for key, value in result.items():
                        result[key] = value * const
                return result
            if op in ("+", "-", "*"):
                raise self.error(f"malformed VNN-LIB: {op!r} needs arguments", at)
            raise self.error(f"unsupported arithmetic operator {op!r} (supported: + - *)", at)
        if tok == ")":
            self.pos -= 1
            raise self.error("malformed VNN-LIB: unexpected ')' (unbalanced parentheses)", at)
        if NUMBER.fullmatch(tok):
            return {None: float(tok)}
        return self.resolve(tok, at)

    def boolean(self) -> tuple[str, object]:
        """A comparison, an ``and`` of comparisons or an ``or`` of those; returns ``("cmp", row)``,
        ``("and", rows)`` or ``("or", [rows, ...])``."""
        at = self.pos
        tok = self.next()
        if tok != "(":
            self.pos -= 1
            raise self.error(f"malformed VNN-LIB: expected a comparison, 'and' or 'or', got {tok!r}")
        op = self.next()
        strict = _COMPARISONS.get(op)
        if strict is not None:
            lhs, rhs = self.arith(), self.arith()
            self._close(op, at)
            if op[0] == "<":
                row = dict(lhs)
                for key, value in rhs.items():
                    row[key] = row.get(key, 0.0) - value
            else:
                row = dict(rhs)
                for key, value in lhs.items():
                    row[key] = row.get(key, 0.0) - value
            return "cmp", Row(row, strict, at)
        if op in ("=", "=="):
            lhs, rhs = self.arith(), self.arith()
            self._close(op, at)
            le = dict(lhs)
            for key, value in rhs.items():
                le[key] = le.get(key, 0.0) - value
            ge = dict(rhs)
            for key, value in lhs.items():
                ge[key] = ge.get(key, 0.0) - value
            return "and", [Row(le, False, at), Row(ge, False, at)]
        if op == "and":
            rows: list[Row] = []
            while self.tokens[self.pos:self.pos + 1] != [")"]:
                kind, payload = self.boolean()
                if kind == "cmp":
                    rows.append(payload)
                elif kind == "and":
                    rows.extend(payload)
                else:
                    raise self.error("malformed VNN-LIB: an 'or' inside an 'and' is not "
                                     "supported; write a disjunction of conjunctions", at)
            self.pos += 1
            return "and", rows
        if op == "or":
            disjuncts: list[list[Row]] = []
            while self.tokens[self.pos:self.pos + 1] != [")"]:
                kind, payload = self.boolean()
                if kind == "cmp":
                    disjuncts.append([payload])
                elif kind == "and":
                    disjuncts.append(payload)
                else:
                    disjuncts.extend(payload)
            self.pos += 1
            return "or", disjuncts
        raise self.error(f"unsupported operator {op!r} (supported: <= >= < > = == and or)", at)

    def _close(self, op: str, at: int) -> None:
        tok = self.next()
        if tok != ")":
            self.pos -= 1
            raise self.error(f"malformed VNN-LIB: {op!r} takes two arguments", at)
