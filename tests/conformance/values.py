"""Printed Python/torch output turned into values, and compared by value.

A session's expected output (``tensor([0.5521, 1.9417])``, ``torch.Size([1, 6])``,
``[{'lr': 0.1}]``, ``Linear(in_features=3, ...)``) is split by :func:`parse_output` into a
flat list of *tokens*: values (tensors, numbers, strings, ``torch.Size``, lists, tuples, dicts
of those) and words (everything else, compared as text). The actual output is printed at full
precision and split the same way, so the two lists line up token by token and
:func:`compare_outputs` compares each pair:

* tensor elements agree within the larger of half a unit in the last digit the expected
  figure prints (torch prints a fixed number of decimals, so it rounds) and
  ``torch.testing.assert_close``'s default for the dtype; a figure written without digits
  after a decimal point (``tensor(2.)``: torch prints integral values so) is exact up to the
  dtype default, so ``tensor(3.)`` never passes for ``tensor(2.)``;
* plain numbers (Python's shortest round-trip ``repr``) are compared with float64's default;
  one showing at least :data:`ROUNDED_MIN_DIGITS` significant digits may also be a rounding
  (``2.3026``) and is allowed half a unit in its last digit; ints and bools are exact;
* tensors also agree in shape, dtype, ``Parameter``-ness and the printed autograd flags
  (``requires_grad=True``, ``grad_fn=<...>``); the device is not compared;
* words agree exactly (whitespace between tokens is ignored).

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
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "DTYPE_DEFAULTS",
    "ROUNDED_MIN_DIGITS",
    "Number",
    "Seq",
    "Size",
    "Str",
    "TensorValue",
    "Word",
    "claimed_half_unit",
    "compare_number",
    "compare_outputs",
    "half_unit",
    "parse_number",
    "parse_output",
    "significant_digits",
]

# torch.testing.assert_close's default (rtol, atol) per dtype (torch/testing/_comparison.py);
# Python floats are compared as float64, as assert_close does.
DTYPE_DEFAULTS: dict[torch.dtype, tuple[float, float]] = {
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
    torch.complex64: (1.3e-6, 1e-5),
    torch.complex128: (1e-7, 1e-7),
}
_EXACT = (0.0, 0.0)
# A plain figure (a Python number, a milestone cell) with at least this many significant
# digits may be a rounding (``0.09045085``, ``2.3026``); a shorter one is taken as exact, so
# ``0.001`` does not pass for ``0.0005``. Tensor elements are always roundings: torch prints a
# fixed number of decimals.
ROUNDED_MIN_DIGITS = 4

_NUMBER_RE = re.compile(
    r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|nan)(?![\w.])",
)
_WORD_RE = re.compile(r"[^\s()\[\]{},:=]+")
_STRING_RE = re.compile(r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\"""")
_DTYPE_RE = re.compile(r"torch\.(\w+)")
_IDENT_END = re.compile(r"(?![\w.])")


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Word:
    """Text that is not a value; compared exactly."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Number:
    """A printed number (``int``, ``float`` or ``bool``) and the precision it was printed with.

    ``half_unit`` is half a unit in the last printed digit after a decimal point (0 for a
    figure printed without such digits, which is taken as exact).
    """

    value: float | int | bool | None
    kind: str  # "int", "float", "bool" or "none"
    half_unit: float
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Str:
    """A quoted string literal (``'mean'``), as printed by ``repr``."""

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
    """A list (``[...]``), tuple (``(...)``) or dict (``{k: v}``, items as 2-tuples)."""

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


# --------------------------------------------------------------------------- numbers


def half_unit(text: str) -> float:
    """Half a unit in the last digit printed after the decimal point of ``text``.

    Args:
        text: a number as printed, e.g. ``"0.1235"``, ``"1.5000e-03"``, ``"2."``, ``"7"``.

    Returns:
        ``0.5 * 10**-(digits after the point) * 10**exponent``; 0 when no digit follows a
        decimal point (``"7"``, ``"2."``, ``"1e-06"``), meaning the figure is exact.

    Example:
        >>> half_unit("0.1235"), half_unit("1.50e-03"), half_unit("2.")
        (5e-05, 5e-06, 0.0)
    """
    mantissa, _, exponent = text.lower().partition("e")
    _, point, decimals = mantissa.partition(".")
    if not point or not decimals:
        return 0.0
    return 0.5 * 10.0 ** (-len(decimals) + (int(exponent) if exponent else 0))


def parse_number(text: str) -> Number:
    """Parse one printed number (``3``, ``-0.0000``, ``1.0e-03``, ``nan``, ``-inf``, ``True``).

    Args:
        text: the number as printed.

    Returns:
        A :class:`Number`; ints stay ints, ``True``/``False`` are bools.

    Raises:
        ValueError: if ``text`` is not a number.

    Example:
        >>> parse_number("0.1235").half_unit
        5e-05
    """
    stripped = text.strip()
    if stripped in ("True", "False"):
        return Number(stripped == "True", "bool", 0.0, stripped)
    if stripped == "None":
        return Number(None, "none", 0.0, stripped)
    if not _NUMBER_RE.fullmatch(stripped):
        raise ValueError(f"not a number: {text!r}")
    body = stripped.lstrip("+-")
    if body.isdigit():
        return Number(int(stripped), "int", 0.0, stripped)
    value = float(stripped)
    return Number(value, "float", half_unit(body) if math.isfinite(value) else 0.0, stripped)


def significant_digits(text: str) -> int:
    """How many significant digits a printed number shows (trailing zeros count).

    Example:
        >>> significant_digits("0.05000"), significant_digits("1.5e-03"), significant_digits("0.0")
        (4, 2, 0)
    """
    mantissa = text.lower().lstrip("+-").partition("e")[0]
    return len(mantissa.replace(".", "").lstrip("0"))


def claimed_half_unit(text: str) -> float:
    """The rounding a plain figure (not a tensor element) admits: see :data:`ROUNDED_MIN_DIGITS`.

    Example:
        >>> claimed_half_unit("0.09045085"), claimed_half_unit("0.001")
        (5e-09, 0.0)
    """
    return half_unit(text) if significant_digits(text) >= ROUNDED_MIN_DIGITS else 0.0


def compare_number(
    expected: Number,
    actual: Number,
    *,
    tolerance: tuple[float, float] = DTYPE_DEFAULTS[torch.float64],
    where: str = "value",
) -> str | None:
    """Compare two plain numbers; return a problem description, or ``None`` if they agree.

    Args:
        expected: the documented figure; if it shows at least :data:`ROUNDED_MIN_DIGITS`
            significant digits it may be a rounding, and half a unit in its last digit is
            allowed; a shorter figure (``0.001``, ``0.3``, ``5e-06``) is taken as exact.
        actual: the computed figure.
        tolerance: ``(rtol, atol)`` (default: float64's assert_close default).
        where: how to name the value in the message.

    Returns:
        ``None`` when ``|actual - expected| <= max(claimed half unit, atol + rtol * |expected|)``
        (exact equality for ints, bools and ``None``; NaN matches NaN, inf matches the same
        inf), else a one-line description.

    Example:
        >>> compare_number(parse_number("0.1235"), parse_number("0.12349")) is None
        True
        >>> compare_number(parse_number("0.001"), parse_number("0.0005")) is None
        False
    """
    if expected.kind != actual.kind and not {expected.kind, actual.kind} <= {"int", "float"}:
        return f"{where}: expected {expected.kind} {expected.text}, got {actual.kind} {actual.text}"
    if expected.kind in ("bool", "none"):
        if expected.value is not actual.value:
            return f"{where}: expected {expected.text}, got {actual.text}"
        return None
    if expected.kind != actual.kind:
        return f"{where}: expected {expected.kind} {expected.text}, got {actual.kind} {actual.text}"
    if expected.kind == "int":
        if expected.value != actual.value:
            return f"{where}: expected {expected.text}, got {actual.text}"
        return None
    half = claimed_half_unit(expected.text) if math.isfinite(float(expected.value)) else 0.0
    return _float_problem(float(expected.value), half, float(actual.value), tolerance, where)


def _float_problem(
    expected: float, half: float, actual: float, tolerance: tuple[float, float], where: str
) -> str | None:
    if math.isnan(expected) or math.isnan(actual):
        if math.isnan(expected) and math.isnan(actual):
            return None
        return f"{where}: {actual!r} differs from {expected!r}"
    if math.isinf(expected) or math.isinf(actual):
        if expected == actual:
            return None
        return f"{where}: {actual!r} differs from {expected!r}"
    rtol, atol = tolerance
    allowed = max(half, atol + rtol * abs(expected))
    diff = abs(actual - expected)
    if diff <= allowed:
        return None
    return f"{where}: {actual!r} differs from {expected!r} by {diff:.3g} (tolerance {allowed:.3g})"


# --------------------------------------------------------------------------- parser


class _Parser:
    """Recursive-descent reader of printed output: values where they parse, words elsewhere."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def startswith(self, prefix: str) -> bool:
        return self.text.startswith(prefix, self.pos)

    def expect(self, literal: str) -> None:
        self.skip_space()
        if not self.startswith(literal):
            raise _NoMatch(literal)
        self.pos += len(literal)

    def tokens(self) -> list[Token]:
        out: list[Token] = []
        while True:
            self.skip_space()
            if self.pos >= len(self.text):
                return out
            start = self.pos
            try:
                out.append(self.value())
                continue
            except _NoMatch:
                self.pos = start
            word = _WORD_RE.match(self.text, self.pos)
            if word:
                self.pos = word.end()
                if word.group() != "<BLANKLINE>":
                    out.append(Word(word.group()))
            else:
                out.append(Word(self.text[self.pos]))
                self.pos += 1

    def value(self) -> Token:
        self.skip_space()
        start = self.pos
        if self.startswith("Parameter containing:"):
            self.pos += len("Parameter containing:")
            self.skip_space()
            if not self.startswith("tensor("):
                raise _NoMatch("tensor")
            return self.tensor(parameter=True, start=start)
        if self.startswith("tensor("):
            return self.tensor(parameter=False, start=start)
        if self.startswith("torch.Size(["):
            self.pos += len("torch.Size([")
            dims = self.items("]", self.number)
            self.expect(")")
            if any(d.kind != "int" for d in dims):
                raise _NoMatch("Size")
            return Size(tuple(int(d.value) for d in dims))
        char = self.text[self.pos] if self.pos < len(self.text) else ""
        if char in "[(":
            self.pos += 1
            closing = "]" if char == "[" else ")"
            items = self.items(closing, self.value, tuple_=char == "(")
            return Seq(
                "list" if char == "[" else "tuple", tuple(items), self.text[start : self.pos]
            )
        if char == "{":
            self.pos += 1
            items = self.items("}", self.dict_item)
            return Seq("dict", tuple(items), self.text[start : self.pos])
        if char in "'\"":
            match = _STRING_RE.match(self.text, self.pos)
            if not match:
                raise _NoMatch("string")
            self.pos = match.end()
            return Str(_unquote(match.group()), match.group())
        return self.number()

    def number(self) -> Number:
        self.skip_space()
        for keyword in ("True", "False", "None"):
            if self.startswith(keyword) and _IDENT_END.match(self.text, self.pos + len(keyword)):
                self.pos += len(keyword)
                return parse_number(keyword)
        match = _NUMBER_RE.match(self.text, self.pos)
        if not match:
            raise _NoMatch("number")
        self.pos = match.end()
        return parse_number(match.group())

    def dict_item(self) -> Seq:
        key = self.value()
        self.expect(":")
        value = self.value()
        return Seq("tuple", (key, value), "")

    def items(self, closing: str, item, tuple_: bool = False) -> list:
        out = []
        self.skip_space()
        if self.startswith(closing):
            self.pos += 1
            return out
        while True:
            out.append(item())
            self.skip_space()
            if self.startswith(closing):
                self.pos += 1
                if tuple_ and len(out) == 1:
                    raise _NoMatch("parenthesised value, not a tuple")
                return out
            self.expect(",")
            self.skip_space()
            if self.startswith(closing):
                self.pos += 1
                return out

    def nested(self) -> tuple[tuple[int, ...], list[Number]]:
        self.skip_space()
        if not self.startswith("["):
            return (), [self.number()]
        self.pos += 1
        parts = self.items("]", self.nested)
        if not parts:
            return (0,), []
        shapes = {shape for shape, _ in parts}
        if len(shapes) != 1:
            raise _NoMatch("ragged tensor")
        inner = shapes.pop()
        return (len(parts), *inner), [n for _, elements in parts for n in elements]

    def tensor(self, *, parameter: bool, start: int) -> TensorValue:
        self.pos += len("tensor(")
        shape, elements = self.nested()
        dtype: torch.dtype | None = None
        requires_grad = False
        grad_fn = None
        while True:
            self.skip_space()
            if self.startswith(")"):
                self.pos += 1
                break
            self.expect(",")
            self.skip_space()
            name = re.compile(r"(\w+)=").match(self.text, self.pos)
            if not name:
                raise _NoMatch("tensor keyword")
            self.pos = name.end()
            key = name.group(1)
            if key == "dtype":
                match = _DTYPE_RE.match(self.text, self.pos)
                found = getattr(torch, match.group(1), None) if match else None
                if not isinstance(found, torch.dtype):
                    raise _NoMatch("dtype")
                dtype = found
                self.pos = match.end()
            elif key == "size":
                self.expect("(")
                dims = self.items(")", self.number)
                shape = tuple(int(d.value) for d in dims)
            elif key == "requires_grad":
                requires_grad = self.number().value is True
            elif key == "grad_fn":
                match = re.compile(r"<(\w+)>").match(self.text, self.pos)
                if not match:
                    raise _NoMatch("grad_fn")
                grad_fn = match.group(1)
                self.pos = match.end()
            elif key == "device":
                self.value()
            else:
                raise _NoMatch(f"tensor keyword {key}")
        if dtype is None:
            dtype = _infer_dtype(elements)
        return TensorValue(
            shape=shape,
            elements=tuple(elements),
            dtype=dtype,
            requires_grad=requires_grad,
            grad_fn=grad_fn,
            parameter=parameter,
            text=self.text[start : self.pos],
        )


def _infer_dtype(elements: Sequence[Number]) -> torch.dtype:
    kinds = {n.kind for n in elements}
    if kinds == {"bool"}:
        return torch.bool
    if "float" in kinds or not kinds:
        return torch.get_default_dtype()
    return torch.int64


def _unquote(literal: str) -> str:
    return ast.literal_eval(literal)


def parse_output(text: str) -> list[Token]:
    """Split printed output into value and word tokens.

    Args:
        text: what a session printed (or documents as printed).

    Returns:
        The tokens in order; whitespace is dropped.

    Example:
        >>> [type(t).__name__ for t in parse_output("loss: tensor(0.5000) [1, 2]")]
        ['Word', 'Word', 'TensorValue', 'Seq']
    """
    return _Parser(text).tokens()


# --------------------------------------------------------------------------- comparison


def compare_outputs(
    expected: Sequence[Token], actual: Sequence[Token], *, grad_fn_names: bool = True
) -> list[str]:
    """Compare two token lists; return the problems found (empty when they agree).

    Args:
        expected: tokens of the documented output (the tolerance comes from these).
        actual: tokens of the computed output, printed at full precision.
        grad_fn_names: compare the names in ``grad_fn=<...>``; when False only their presence
            is compared (a drop-in may record a different autograd node than torch's).

    Returns:
        One line per problem; stops after the first structural mismatch.
    """
    if not expected and actual:
        return [f"expected no output, got {_show(actual)!r}"]
    if len(expected) != len(actual):
        return [
            f"expected {len(expected)} output tokens, got {len(actual)}: "
            f"{_show(expected)!r} vs {_show(actual)!r}"
        ]
    problems: list[str] = []
    for index, (e, a) in enumerate(zip(expected, actual, strict=True)):
        problems += _compare(e, a, f"token {index + 1}", grad_fn_names)
    return problems


def _show(tokens: Sequence[Token]) -> str:
    text = " ".join(str(t) for t in tokens)
    return text if len(text) < 300 else text[:300] + " ..."


def _compare(e: Token, a: Token, where: str, grad_fn_names: bool) -> list[str]:
    if type(e) is not type(a):
        return [f"{where}: expected {e} ({type(e).__name__}), got {a} ({type(a).__name__})"]
    if isinstance(e, Number):
        problem = compare_number(e, a, where=f"{where}")
        return [problem] if problem else []
    if isinstance(e, TensorValue):
        return _compare_tensors(e, a, grad_fn_names)
    if isinstance(e, Seq):
        if e.kind != a.kind or len(e.items) != len(a.items):
            return [f"{where}: expected {e.text}, got {a.text}"]
        out: list[str] = []
        for i, (ei, ai) in enumerate(zip(e.items, a.items, strict=True)):
            out += _compare(ei, ai, f"{where}[{i}]", grad_fn_names)
        return out
    if e != a:
        return [f"{where}: expected {e}, got {a}"]
    return []


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
    tolerance = DTYPE_DEFAULTS.get(e.dtype, _EXACT)
    bad = []
    for flat, (en, an) in enumerate(zip(e.elements, a.elements, strict=True)):
        index = _unravel(flat, e.shape)
        if e.dtype.is_floating_point:
            problem = _float_problem(
                float(en.value), en.half_unit, float(an.value), tolerance, f"tensor element {index}"
            )
        elif en.value != an.value:
            problem = f"tensor element {index}: expected {en.text}, got {an.text}"
        else:
            problem = None
        if problem:
            bad.append(problem)
    if bad:
        count = f"{len(bad)} of {len(e.elements)} elements differ; " if len(bad) > 1 else ""
        problems.append(count + "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else ""))
    return problems


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for dim in reversed(shape):
        index.append(flat % dim)
        flat //= dim
    return tuple(reversed(index))
