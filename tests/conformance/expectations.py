"""Expectations files: known failures (and skips) of an implementation, each with a reason.

One entry per line; ``#`` starts a comment::

    # PATTERN                                                   REASON
    reference/optim.md::adam-*[*-mypkg.MyAdam]                  MyAdam has no amsgrad yet
    skip reference/conv.md::conv2d-shapes[*-mypkg.MyConv]       MyConv needs a GPU

``PATTERN`` is a conformance id (``PAGE::SLUG[...]``, the page relative to ``docs/``; a
leading ``docs/`` is accepted) in which ``*`` matches any run of characters and everything
else, brackets included, is literal. The optional first word ``xfail`` (the default) or
``skip`` says what to do with matching items; the reason is required. A matching item that
fails is reported as xfailed with the reason; one that passes is reported as XPASS.

Example:
    >>> rules = parse_expectations("reference/a.md::x[*]  tracked in #12\\n")
    >>> rules[0].matches("reference/a.md::x[row=1]"), rules[0].reason
    (True, 'tracked in #12')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Expectation", "load_expectations", "parse_expectations"]

_ACTIONS = ("xfail", "skip")


@dataclass(frozen=True)
class Expectation:
    """One entry: a pattern over conformance ids, what to do, and why."""

    pattern: str
    action: str
    reason: str
    line: int

    def matches(self, conformance_id: str) -> bool:
        """Whether ``conformance_id`` matches the pattern (``*`` is the only wildcard)."""
        regex = ".*".join(re.escape(part) for part in self.pattern.split("*"))
        return re.fullmatch(regex, conformance_id) is not None


def parse_expectations(text: str, source: str = "<expectations>") -> list[Expectation]:
    """Parse an expectations file's text.

    Args:
        text: the file's content.
        source: the file's name, for error messages.

    Raises:
        ValueError: for an entry without a reason or a pattern that is not a conformance id.
    """
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip() if raw.lstrip().startswith("#") else raw.strip()
        if not line:
            continue
        words = line.split(None, 1)
        action = "xfail"
        if words[0] in _ACTIONS:
            action = words[0]
            words = words[1].split(None, 1) if len(words) > 1 else []
        if len(words) < 2 or not words[1].strip():
            raise ValueError(f"{source}:{number}: expected 'PATTERN REASON', got {raw.strip()!r}")
        pattern, reason = words[0], words[1].strip()
        pattern = pattern.removeprefix("docs/")
        if "::" not in pattern:
            raise ValueError(
                f"{source}:{number}: {pattern!r} is not a conformance id (PAGE::SLUG[...])"
            )
        entries.append(Expectation(pattern, action, reason, number))
    return entries


def load_expectations(path: str | Path) -> list[Expectation]:
    """Read an expectations file (see the module docstring for the format).

    Raises:
        ValueError: if the file is missing or malformed.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--conformance-expectations: no such file {str(path)!r}")
    return parse_expectations(file.read_text(encoding="utf-8"), str(path))
