"""Printed Python/torch output turned into values, and compared by value.

:func:`parse_output` splits printed output (``tensor([0.5521, 1.9417])``, ``torch.Size([1, 6])``,
``[{'lr': 0.1}]``, ``Linear(in_features=3, ...)``) into *tokens*: values (tensors, numbers,
strings, sizes, and lists, tuples and dicts of those) and words (everything else). The actual
output is printed at full precision and split the same way, and :func:`compare_outputs`
compares the two token lists pair by pair:

* a tensor element agrees within the larger of half a unit in the last digit the expected figure
  prints and ``torch.testing.assert_close``'s default for the dtype; a figure without digits after
  its point (``tensor(2.)``) claims an exact value, so only the dtype default applies;
* a plain number is compared with float64's default; one showing at least
  :data:`ROUNDED_MIN_DIGITS` significant digits may be a rounding (``2.3026``) and also gets half a
  unit in its last digit; ints, bools and ``None`` are exact, and an int is not a float;
* tensors also agree in shape, dtype, ``Parameter``-ness and the printed autograd flags
  (``requires_grad=True``, ``grad_fn=<...>``); the device is not compared;
* words agree exactly.

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
    torch.complex64: (1.3e-6, 1e-5),
    torch.complex128: (1e-7, 1e-7),
}
# A plain figure (a Python number, a milestone cell) with at least this many significant digits
# may be a rounding (``0.09045085``); a shorter one is exact, so ``0.001`` is not ``0.0005``.
ROUNDED_MIN_DIGITS = 4

_NUMBER_RE = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|nan)(?![\w.])")
_WORD_RE = re.compile(r"[^\s()\[\]{},:=]+")
_STRING_RE = re.compile(r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\"""")
_KEYWORD_RE = re.compile(r"(True|False|None)(?![\w.])")
_TENSOR_KEY_RE = re.compile(r"(\w+)=")


@dataclass(frozen=True)
class Word:
    """Text that is not a value; compared exactly."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Number:
    """A printed number (``int``, ``float``, ``bool`` or ``None``) and how it was printed.

    ``half_unit`` is half a unit in the last digit printed after the decimal point (0 when there
    is none: the figure is exact).
    """

    value: float | int | bool | None
    kind: str  # "int", "float", "bool" or "none"
    half_unit: float
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Str:
    """A quoted string literal, compared by value."""

    value: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Size:
    """``torch.Size([...])``."""

    dims: tuple[int, ...]

    def __str__(self) -> str:
        return f"torch.Size({list(self.dims)})"


@dataclass(frozen=True)
class Seq:
    """A list, tuple or dict (its items as key-value tuples)."""

    kind: str  # "list", "tuple" or "dict"
    items: tuple
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class TensorValue:
    """A printed ``tensor(...)`` (or ``Parameter containing: tensor(...)``)."""

    shape: tuple[int, ...]
    elements: tuple[Number, ...]
    dtype: torch.dtype
    requires_grad: bool
    grad_fn: str | None
    parameter: bool
    text: str = field(compare=False)

    def __str__(self) -> str:
        return self.text


Token = Word | Number | Str | Size | Seq | TensorValue


class _NoMatch(Exception):
    """A value parser did not match at this position."""


def half_unit(text: str) -> float:
    """Half a unit in the last digit printed after the decimal point of ``text`` (0 if none).

    Example:
        >>> half_unit("0.1235"), half_unit("1.50e-03"), half_unit("2."), half_unit("7")
        (5e-05, 5e-06, 0.0, 0.0)
    """
    mantissa, _, exponent = text.lower().partition("e")
    decimals = mantissa.partition(".")[2]
    return 0.5 * 10.0 ** (int(exponent or 0) - len(decimals)) if decimals else 0.0


def parse_number(text: str) -> Number:
    """Parse one printed number (``3``, ``-0.0000``, ``1.0e-03``, ``nan``, ``True``, ``None``).

    Raises:
        ValueError: if ``text`` is not a number.

    Example:
        >>> parse_number("0.1235").half_unit, parse_number("3").kind
        (5e-05, 'int')
    """
    text = text.strip()
    if text in ("True", "False", "None"):
        return Number(None if text == "None" else text == "True", text.lower()[:4], 0.0, text)
    if not _NUMBER_RE.fullmatch(text):
        raise ValueError(f"not a number: {text!r}")
    if text.lstrip("+-").isdigit():
        return Number(int(text), "int", 0.0, text)
    value = float(text)
    return Number(value, "float", half_unit(text) if math.isfinite(value) else 0.0, text)


def _rounding(text: str) -> float:
    """The rounding a plain figure admits: half a unit if it shows 4+ significant digits."""
    mantissa = text.lower().lstrip("+-").partition("e")[0]
    significant = len(mantissa.replace(".", "").lstrip("0"))
    return half_unit(text) if significant >= ROUNDED_MIN_DIGITS else 0.0


def compare_number(
    expected: Number,
    actual: Number,
    *,
    tolerance: tuple[float, float] = DTYPE_DEFAULTS[torch.float64],
    where: str = "value",
) -> str | None:
    """Compare two plain numbers; return a one-line problem, or ``None`` if they agree.

    Args:
        expected: the documented figure (its rounding: see :data:`ROUNDED_MIN_DIGITS`).
        actual: the computed figure.
        tolerance: ``(rtol, atol)``, float64's ``assert_close`` default unless given.
        where: how to name the value in the message.

    Example:
        >>> compare_number(parse_number("0.1235"), parse_number("0.12349")) is None
        True
        >>> compare_number(parse_number("0.001"), parse_number("0.0005"))
        'value: 0.0005 differs from 0.001 by 0.0005 (tolerance 1e-07)'
    """
    if expected.kind != actual.kind:
        return f"{where}: expected {expected.kind} {expected.text}, got {actual.kind} {actual.text}"
    if expected.kind != "float":
        return (
            None
            if expected.value == actual.value
            else f"{where}: expected {expected}, got {actual}"
        )
    rounding = _rounding(expected.text) if math.isfinite(expected.value) else 0.0
    return _float_problem(expected.value, rounding, actual.value, tolerance, where)


def _float_problem(
    expected: float, rounding: float, actual: float, tolerance: tuple[float, float], where: str
) -> str | None:
    if not (math.isfinite(expected) and math.isfinite(actual)):
        same = expected == actual or (math.isnan(expected) and math.isnan(actual))
        return None if same else f"{where}: {actual!r} differs from {expected!r}"
    rtol, atol = tolerance
    allowed = max(rounding, atol + rtol * abs(expected))
    diff = abs(actual - expected)
    if diff <= allowed:
        return None
    return f"{where}: {actual!r} differs from {expected!r} by {diff:.3g} (tolerance {allowed:.3g})"


class _Reader:
    """Recursive-descent reader of printed output: values where they parse, words elsewhere."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def at(self, prefix: str) -> bool:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text.startswith(prefix, self.pos)

    def take(self, literal: str) -> None:
        if not self.at(literal):
            raise _NoMatch(literal)
        self.pos += len(literal)

    def match(self, pattern: re.Pattern[str]) -> re.Match[str]:
        self.at("")
        found = pattern.match(self.text, self.pos)
        if not found:
            raise _NoMatch(pattern.pattern)
        self.pos = found.end()
        return found

    def tokens(self) -> list[Token]:
        out: list[Token] = []
        while True:
            self.at("")  # skips whitespace
            if self.pos >= len(self.text):
                return out
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

    def value(self) -> Token:
        start = self.pos
        if self.at("Parameter containing:"):
            self.pos += len("Parameter containing:")
            return self.tensor(parameter=True, start=start)
        if self.at("tensor("):
            return self.tensor(parameter=False, start=start)
        if self.at("torch.Size(["):
            self.pos += len("torch.Size([")
            dims = self.items("]", self.number)
            self.take(")")
            if any(d.kind != "int" for d in dims):
                raise _NoMatch("Size")
            return Size(tuple(d.value for d in dims))
        for opening, closing, kind in (("[", "]", "list"), ("(", ")", "tuple"), ("{", "}", "dict")):
            if self.at(opening):
                self.pos += 1
                items = self.items(closing, self.pair if kind == "dict" else self.value, kind)
                return Seq(kind, tuple(items), self.text[start : self.pos])
        if self.at("'") or self.at('"'):
            found = self.match(_STRING_RE)
            return Str(ast.literal_eval(found.group()), found.group())
        return self.number()

    def number(self) -> Number:
        if self.at("True") or self.at("False") or self.at("None"):
            return parse_number(self.match(_KEYWORD_RE).group())
        return parse_number(self.match(_NUMBER_RE).group())

    def pair(self) -> Seq:
        key = self.value()
        self.take(":")
        return Seq("tuple", (key, self.value()), "")

    def items(self, closing: str, item: Callable[[], object], kind: str = "") -> list:
        out = []
        while not self.at(closing):
            out.append(item())
            if not self.at(closing):
                self.take(",")
        self.pos += 1
        if (
            kind == "tuple"
            and len(out) == 1
            and not self.text[: self.pos - 1].rstrip().endswith(",")
        ):
            raise _NoMatch("a parenthesised value, not a tuple")
        return out

    def nested(self) -> tuple[tuple[int, ...], list[Number]]:
        if not self.at("["):
            return (), [self.number()]
        self.pos += 1
        parts = self.items("]", self.nested)
        if len({shape for shape, _ in parts}) > 1:
            raise _NoMatch("ragged tensor")
        inner = parts[0][0] if parts else ()
        return (len(parts), *inner), [n for _, elements in parts for n in elements]

    def tensor(self, *, parameter: bool, start: int) -> TensorValue:
        self.take("tensor(")
        shape, elements = self.nested()
        dtype, requires_grad, grad_fn = None, False, None
        while not self.at(")"):
            self.take(",")
            key = self.match(_TENSOR_KEY_RE).group(1)
            if key == "dtype":
                dtype = getattr(torch, self.match(re.compile(r"torch\.(\w+)")).group(1), None)
                if not isinstance(dtype, torch.dtype):
                    raise _NoMatch("dtype")
            elif key == "size":
                self.take("(")
                shape = tuple(d.value for d in self.items(")", self.number))
            elif key == "requires_grad":
                requires_grad = self.number().value is True
            elif key == "grad_fn":
                grad_fn = self.match(re.compile(r"<(\w+)>")).group(1)
            elif key == "device":
                self.value()
            else:
                raise _NoMatch(f"tensor keyword {key}")
        self.pos += 1
        if dtype is None:
            kinds = {n.kind for n in elements}
            dtype = (
                torch.bool
                if kinds == {"bool"}
                else torch.int64
                if kinds == {"int"}
                else torch.get_default_dtype()
            )
        text = self.text[start : self.pos]
        return TensorValue(shape, tuple(elements), dtype, requires_grad, grad_fn, parameter, text)


def parse_output(text: str) -> list[Token]:
    """Split printed output into value and word tokens (whitespace dropped).

    Example:
        >>> [type(t).__name__ for t in parse_output("loss: tensor(0.5000) [1, 2]")]
        ['Word', 'Word', 'TensorValue', 'Seq']
    """
    return _Reader(text).tokens()


def compare_outputs(
    expected: Sequence[Token], actual: Sequence[Token], *, grad_fn_names: bool = True
) -> list[str]:
    """Compare two token lists; return the problems found (empty when they agree).

    Args:
        expected: tokens of the documented output (the tolerance comes from these).
        actual: tokens of the computed output, printed at full precision.
        grad_fn_names: compare the names in ``grad_fn=<...>``; when False only their presence
            (a drop-in may record its own autograd node).
    """
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
        problem = compare_number(e, a, where=where)
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
    tolerance = DTYPE_DEFAULTS.get(e.dtype, (0.0, 0.0))
    bad = []
    for flat, (en, an) in enumerate(zip(e.elements, a.elements, strict=True)):
        index = [(flat // math.prod(e.shape[d + 1 :])) % e.shape[d] for d in range(len(e.shape))]
        where = f"tensor element {tuple(index)}"
        if e.dtype.is_floating_point:
            problem = _float_problem(en.value, en.half_unit, an.value, tolerance, where)
        else:
            problem = None if en.value == an.value else f"{where}: expected {en}, got {an}"
        if problem:
            bad.append(problem)
    if bad:
        count = f"{len(bad)} of {len(e.elements)} elements differ; " if len(bad) > 1 else ""
        problems.append(count + "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else ""))
    return problems
