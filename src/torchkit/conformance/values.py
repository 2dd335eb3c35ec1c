"""Printed Python and torch output, read as values and compared by value.

:func:`parse_output` splits printed output into values (``tensor(...)``, ``torch.Size([...])``,
numbers, quoted strings, and lists, tuples and dicts of those) and words (everything else);
:func:`compare_outputs` compares two such lists pair by pair, as ``docs/conformance.md`` says:
tensor elements within half a unit in their last printed digit or the dtype's ``assert_close``
default, plain numbers within float64's, or half a unit when they show four or more digits.

Example:
    >>> expected = parse_output("tensor([1.2175, 0.0000])")
    >>> compare_outputs(expected, parse_output("tensor([1.21748, 0.])"))
    []
    >>> compare_outputs(parse_output("tensor(2.)"), parse_output("tensor(3.)"))
    ['tensor element (): 3.0 differs from 2.0 by 1 (tolerance 1.26e-05)']
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

# torch.testing.assert_close's default (rtol, atol) per dtype; Python floats count as float64.
DTYPE_DEFAULTS: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}
# A plain figure (a Python number, a milestone cell) with at least this many significant digits
# may be a rounding (``0.09045085``); a shorter one is exact, so ``0.001`` is not ``0.0005``.
ROUNDED_MIN_DIGITS = 4

_NUMBER_RE = re.compile(
    r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|nan)(?![\w.])|(?:True|False|None)(?![\w.])"
)
_WORD_RE = re.compile(r"[^\s()\[\]{},:=]+")
_STRING_RE = re.compile(r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\"""")


class Token:
    """A piece of printed output; ``text`` is how it was printed."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Word(Token):
    """Text that is not a value; compared exactly."""

    text: str


@dataclass(frozen=True)
class Number(Token):
    """An ``int``, ``float``, ``bool`` or ``None``; ``half_unit`` is half a unit in its last
    printed decimal (0 when it prints none: the figure is exact)."""

    value: float | int | bool | None
    kind: str  # "int", "float", "bool" or "none"
    half_unit: float
    text: str


@dataclass(frozen=True)
class Str(Token):
    """A quoted string literal."""

    value: str
    text: str


@dataclass(frozen=True)
class Size(Token):
    """``torch.Size([...])``."""

    dims: tuple[int, ...]

    def __str__(self) -> str:
        return f"torch.Size({list(self.dims)})"


@dataclass(frozen=True)
class Seq(Token):
    """A list, tuple or dict (its items as key-value tuples)."""

    kind: str  # "list", "tuple" or "dict"
    items: tuple
    text: str


@dataclass(frozen=True)
class TensorValue(Token):
    """A printed ``tensor(...)``, or ``Parameter containing: tensor(...)``."""

    shape: tuple[int, ...]
    elements: tuple[Number, ...]
    dtype: torch.dtype
    requires_grad: bool
    grad_fn: str | None
    parameter: bool
    text: str = field(compare=False)


def half_unit(text: str) -> float:
    """Half a unit in the last digit printed after the decimal point of ``text`` (0 if none)."""
    mantissa, _, exponent = text.lower().partition("e")
    decimals = mantissa.partition(".")[2]
    return 0.5 * 10.0 ** (int(exponent or 0) - len(decimals)) if decimals else 0.0


def parse_number(text: str) -> Number:
    """Read a printed number (``3``, ``-0.0000``, ``1.0e-03``, ``nan``, ``True``, ``None``)."""
    text = text.strip()
    if not _NUMBER_RE.fullmatch(text):
        raise ValueError(f"not a number: {text!r}")
    if text in ("True", "False", "None"):
        return Number(None if text == "None" else text == "True", text.lower()[:4], 0.0, text)
    if text.lstrip("+-").isdigit():
        return Number(int(text), "int", 0.0, text)
    value = float(text)
    return Number(value, "float", half_unit(text) if math.isfinite(value) else 0.0, text)


def compare_number(
    expected: Number, actual: Number, where: str, tolerance: tuple[float, float] = (1e-7, 1e-7)
) -> str | None:
    """What differs between two plain numbers (``None``: nothing); ``tolerance`` is (rtol, atol),
    float64's ``assert_close`` default unless given."""
    if expected.kind != actual.kind:
        return f"{where}: expected {expected.kind} {expected.text}, got {actual.kind} {actual.text}"
    if expected.kind != "float":
        same = expected.value == actual.value
        return None if same else f"{where}: expected {expected}, got {actual}"
    return _float_problem(expected.value, _rounding(expected), actual.value, tolerance, where)


def parse_figure(text: str) -> Number:
    """Read a figure of a table cell: an ``int`` or a ``float`` as printed (``0``, ``1e-3``)."""
    number = parse_number(text)
    if number.kind not in ("int", "float"):
        raise ValueError(f"not a number: {text!r}")
    return number


def compare_figure(
    expected: Number, actual: float, where: str, tolerance: tuple[float, float] = (1e-7, 1e-7)
) -> str | None:
    """What differs between a figure (from :func:`parse_figure`; ``0`` is 0.0) and a computed
    float, compared as two floats are by :func:`compare_number`."""
    return _float_problem(float(expected.value), _rounding(expected), actual, tolerance, where)


def _rounding(figure: Number) -> float:
    """Half a unit in the last digit of a figure that may be a rounding (it shows at least
    :data:`ROUNDED_MIN_DIGITS` significant digits), else 0."""
    mantissa = figure.text.lower().lstrip("+-").partition("e")[0]
    significant = len(mantissa.replace(".", "").lstrip("0"))
    return figure.half_unit if significant >= ROUNDED_MIN_DIGITS else 0.0


def _float_problem(
    expected: float, rounding: float, actual: float, tolerance: tuple[float, float], where: str
) -> str | None:
    if not (math.isfinite(expected) and math.isfinite(actual)):
        same = expected == actual or (math.isnan(expected) and math.isnan(actual))
        return None if same else f"{where}: {actual!r} differs from {expected!r}"
    rtol, atol = tolerance
    allowed, diff = max(rounding, atol + rtol * abs(expected)), abs(actual - expected)
    if diff <= allowed:
        return None
    return f"{where}: {actual!r} differs from {expected!r} by {diff:.3g} (tolerance {allowed:.3g})"


class _NoMatch(Exception):
    """No value starts here."""


class _Reader:
    """Recursive-descent reader of printed output: values where they parse, words elsewhere."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def at(self, prefix: str) -> bool:
        """Skip whitespace; whether the text goes on with ``prefix``."""
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text.startswith(prefix, self.pos)

    def skip(self, prefix: str) -> bool:
        """Move past ``prefix`` if the text goes on with it."""
        found = self.at(prefix)
        self.pos += len(prefix) if found else 0
        return found

    def take(self, literal: str) -> None:
        if not self.skip(literal):
            raise _NoMatch(literal)

    def match(self, pattern: re.Pattern[str]) -> str:
        """The text ``pattern`` matches here (its group, if it has one)."""
        self.at("")
        if not (found := pattern.match(self.text, self.pos)):
            raise _NoMatch(pattern.pattern)
        self.pos = found.end()
        return found[found.lastindex or 0]

    def tokens(self) -> list[Token]:
        out: list[Token] = []
        while self.at("") and self.pos < len(self.text):  # at("") skips whitespace
            start = self.pos
            try:
                out.append(self.value())
                continue
            except _NoMatch:
                self.pos = start
            word = _WORD_RE.match(self.text, self.pos)
            text = word.group() if word else self.text[self.pos]
            self.pos += len(text)
            if text != "<BLANKLINE>":
                out.append(Word(text))
        return out

    def value(self) -> Token:
        start = self.pos
        if (parameter := self.skip("Parameter containing:")) or self.at("tensor("):
            return self.tensor(parameter, start)
        if self.skip("torch.Size(["):
            dims = self.items("]", self.number)
            self.take(")")
            if any(d.kind != "int" for d in dims):
                raise _NoMatch("Size")
            return Size(tuple(d.value for d in dims))
        for opening, closing, kind in (("[", "]", "list"), ("(", ")", "tuple"), ("{", "}", "dict")):
            if self.skip(opening):
                items = self.items(closing, self.pair if kind == "dict" else self.value)
                one = kind == "tuple" and len(items) == 1
                if one and not self.text[: self.pos - 1].rstrip().endswith(","):
                    raise _NoMatch("a parenthesised value, not a tuple")
                return Seq(kind, tuple(items), self.text[start : self.pos])
        if self.at("'") or self.at('"'):
            text = self.match(_STRING_RE)
            return Str(ast.literal_eval(text), text)
        return self.number()

    def number(self) -> Number:
        return parse_number(self.match(_NUMBER_RE))

    def pair(self) -> Seq:
        key = self.value()
        self.take(":")
        return Seq("tuple", (key, self.value()), "")

    def items(self, closing: str, item: Callable[[], object]) -> list:
        """Items separated by commas, up to ``closing``."""
        out = []
        while not self.skip(closing):
            out.append(item())
            if not self.at(closing):
                self.take(",")
        return out

    def nested(self) -> tuple[tuple[int, ...], list[Number]]:
        """A tensor's nested lists of figures: their shape, and the figures in order."""
        if not self.skip("["):
            return (), [self.number()]
        parts = self.items("]", self.nested)
        if len({shape for shape, _ in parts}) > 1:
            raise _NoMatch("ragged tensor")
        inner = parts[0][0] if parts else ()
        return (len(parts), *inner), [n for _, elements in parts for n in elements]

    def tensor(self, parameter: bool, start: int) -> TensorValue:
        self.take("tensor(")
        shape, elements = self.nested()
        dtype, requires_grad, grad_fn = None, False, None
        while not self.skip(")"):
            self.take(",")
            key = self.match(re.compile(r"(\w+)="))
            if key == "dtype":
                dtype = getattr(torch, self.match(re.compile(r"torch\.(\w+)")), None)
                if not isinstance(dtype, torch.dtype):
                    raise _NoMatch("dtype")
            elif key == "size":
                self.take("(")
                shape = tuple(d.value for d in self.items(")", self.number))
            elif key == "requires_grad":
                requires_grad = self.number().value is True
            elif key == "grad_fn":
                grad_fn = self.match(re.compile(r"<(\w+)>"))
            elif key == "device":
                self.value()
            else:
                raise _NoMatch(f"tensor keyword {key}")
        if dtype is None:  # printed without dtype=: what torch infers from the figures
            kinds, default = {n.kind for n in elements}, torch.get_default_dtype()
            dtype = (
                torch.bool if kinds == {"bool"} else torch.int64 if kinds == {"int"} else default
            )
        text = self.text[start : self.pos]
        return TensorValue(shape, tuple(elements), dtype, requires_grad, grad_fn, parameter, text)


def parse_output(text: str) -> list[Token]:
    """Split printed output into value and word tokens (whitespace dropped)."""
    return _Reader(text).tokens()


def compare_outputs(
    expected: Sequence[Token], actual: Sequence[Token], *, grad_fn_names: bool = True
) -> list[str]:
    """What differs between the documented and the computed tokens (nothing: an empty list);
    ``grad_fn_names=False`` compares only whether a ``grad_fn`` is printed (a drop-in may record
    its own autograd node)."""
    if not expected and actual:
        return [f"expected no output, got {_show(actual)!r}"]
    if len(expected) != len(actual):
        return [
            f"expected {len(expected)} output tokens, got {len(actual)}: "
            f"{_show(expected)!r} vs {_show(actual)!r}"
        ]
    return [
        problem
        for index, pair in enumerate(zip(expected, actual, strict=True))
        for problem in _compare(*pair, f"token {index + 1}", grad_fn_names)
    ]


def _show(tokens: Sequence[Token]) -> str:
    text = " ".join(str(t) for t in tokens)
    return text if len(text) < 300 else text[:300] + " ..."


def _compare(e: Token, a: Token, where: str, grad_fn_names: bool) -> list[str]:
    if type(e) is not type(a):
        return [f"{where}: expected {e} ({type(e).__name__}), got {a} ({type(a).__name__})"]
    if isinstance(e, Number):
        problem = compare_number(e, a, where)
        return [problem] if problem else []
    if isinstance(e, TensorValue):
        return _compare_tensors(e, a, grad_fn_names)
    if isinstance(e, Seq):
        if e.kind != a.kind or len(e.items) != len(a.items):
            return [f"{where}: expected {e.text}, got {a.text}"]
        return [
            problem
            for i, (ei, ai) in enumerate(zip(e.items, a.items, strict=True))
            for problem in _compare(ei, ai, f"{where}[{i}]", grad_fn_names)
        ]
    return [] if e == a else [f"{where}: expected {e}, got {a}"]


def _compare_tensors(e: TensorValue, a: TensorValue, grad_fn_names: bool) -> list[str]:
    what = "Parameter" if e.parameter else "tensor"
    if e.parameter != a.parameter:
        return [f"expected a {what}, got {'a Parameter' if a.parameter else 'a plain tensor'}"]
    if e.shape != a.shape:
        return [f"{what} shape: expected {list(e.shape)}, got {list(a.shape)}"]
    if e.dtype != a.dtype:
        return [f"{what} dtype: expected {e.dtype}, got {a.dtype}"]
    problems = []
    if e.requires_grad != a.requires_grad:
        problems.append(f"{what} requires_grad=True printed on one side only")
    if (e.grad_fn is None) != (a.grad_fn is None) or (grad_fn_names and e.grad_fn != a.grad_fn):
        problems.append(f"{what} grad_fn: expected {e.grad_fn}, got {a.grad_fn}")
    tolerance, bad = DTYPE_DEFAULTS.get(e.dtype, (0.0, 0.0)), []
    for flat, (en, an) in enumerate(zip(e.elements, a.elements, strict=True)):
        index = [(flat // math.prod(e.shape[d + 1 :])) % e.shape[d] for d in range(len(e.shape))]
        where = f"tensor element {tuple(index)}"
        if e.dtype.is_floating_point:
            bad.append(_float_problem(en.value, en.half_unit, an.value, tolerance, where))
        elif en.value != an.value:
            bad.append(f"{where}: expected {en}, got {an}")
    if bad := [b for b in bad if b]:
        count = f"{len(bad)} of {len(e.elements)} elements differ; " if len(bad) > 1 else ""
        problems.append(count + "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else ""))
    return problems
