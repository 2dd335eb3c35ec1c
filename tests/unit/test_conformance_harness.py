"""Tests of the conformance harness (``torchkit.conformance``) itself.

Values, pages, the registry and the evaluator are tested directly, on small pages held in a
Sybil ``Document``; collection, ids, families, expectations, errata, the summary and the report
are tested end to end by running pytest (``pytester``) on small docs trees in a temporary folder,
where the entry-point plugin is enabled by ``--conformance-docs``; packaging and the
``python -m torchkit conformance`` command run in subprocesses.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from sybil import Document

from torchkit.conformance.evaluate import evaluate, setup_page
from torchkit.conformance.pages import (
    ConformanceParser,
    PageDocument,
    PageError,
    parse_page,
    parse_shapes,
    split_cells,
)
from torchkit.conformance.plugin import docs_root, parse_expectations, requirement_problem
from torchkit.conformance.registry import ImplementationUnavailable, Registry, builtin_registry
from torchkit.conformance.summary import natural_key
from torchkit.conformance.values import compare_outputs, half_unit, parse_output
from torchkit.optim import lr_scheduler as tk_lr_scheduler

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
PREIMPORT = (
    "torch._dynamo",  # imported by the first optimizer.step()
    "triton",
    "torchkit.nn",
    "torchkit.optim",
    "torchkit.optim.lr_scheduler",
    "torchkit.kernels.conv2d_relu",
    "torchkit.kernels.adam",
)


def problems(expected: str, actual: str, **kwargs: bool) -> list[str]:
    return compare_outputs(parse_output(expected), parse_output(actual), **kwargs)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "half"),
    [
        ("0.1235", 5e-5),
        ("-0.0000", 5e-5),
        ("1.5000e-03", 5e-8),
        ("2.5e+02", 5.0),
        ("2.", 0.0),
        ("7", 0.0),
        ("1e-06", 0.0),
    ],
    ids=lambda v: str(v),
)
def test_half_unit_counts_printed_decimals(text: str, half: float) -> None:
    assert half_unit(text) == pytest.approx(half, rel=1e-12, abs=0.0)


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("tensor(2.)", "tensor(3.)"),
        ("tensor(0.6897)", "tensor(0.6898)"),
        ("tensor([0.4736, 2.3385, 0.4566])", "tensor([0.4736, 2.3395, 0.4566])"),
        ("1e-06", "2e-06"),
        ("0.1", "0.2"),
        ("[0.1, 0.01]", "[0.1, 0.02]"),
        ("torch.Size([1, 6, 28, 28])", "torch.Size([1, 6, 28, 27])"),
        ("(26, 9, 10)", "(26, 9, 11)"),
        ("{'lr': 0.1, 'momentum': 0.9}", "{'lr': 0.1, 'momentum': 0.8}"),
        ("True", "False"),
    ],
    ids=[
        "tensor-3-for-2",
        "last-digit",
        "one-element",
        "sci",
        "float",
        "list",
        "size",
        "tuple",
        "dict",
        "bool",
    ],
)
def test_a_changed_figure_fails(expected: str, actual: str) -> None:
    assert problems(expected, actual)
    assert problems(expected, expected) == []


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        # within half a unit of the printed 4th decimal (the actual is printed at 16 digits)
        ("tensor(0.6897)", "tensor(0.6897449970245361)"),
        ("tensor([-0.0000, 0.2677])", "tensor([-0.0000000000000000, 0.2676999866962433])"),
        # an integral figure: only float32's default (atol 1e-5, rtol 1.3e-6) applies
        ("tensor(2.)", "tensor(2.0000050067901611)"),
        # scientific notation, as torch prints widely spread values
        ("tensor([1.0000e-08, 1.0000e+04])", "tensor([1.0000000036e-08, 1.0000000000e+04])"),
        ("0.30000000000000004", "0.3"),
        ("tensor([nan, inf, -inf])", "tensor([nan, inf, -inf])"),
        # a plain figure with 4+ significant digits may be a rounding of the true value
        ("2.3026", "2.302585124969482"),
        ("[0.09045085]", "[0.09045084971874737]"),
    ],
    ids=[
        "half-unit",
        "negative-zero",
        "integral",
        "scientific",
        "float64-default",
        "nonfinite",
        "rounded-float",
        "rounded-in-list",
    ],
)
def test_tolerance_accepts_rounding(expected: str, actual: str) -> None:
    assert problems(expected, actual) == []


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ("tensor(0.6897)", "tensor(0.6897510000000000)"),  # just over half a unit
        ("tensor(2.)", "tensor(2.0000200000000000)"),  # over float32's default
        ("tensor([nan, inf])", "tensor([nan, -inf])"),
        ("tensor([1., nan])", "tensor([1., 1.])"),
        # a plain figure with fewer than 4 significant digits is exact: 0.001 is not 0.0005
        ("0.001", "0.0005"),
        ("0.3", "0.31"),
        ("5e-06", "5.4e-06"),
        ("2.30", "2.302585124969482"),
    ],
    ids=[
        "over-half-unit",
        "over-dtype-default",
        "inf-sign",
        "nan",
        "short-figure",
        "short-figure-2",
        "short-sci",
        "three-digits",
    ],
)
def test_tolerance_rejects_beyond(expected: str, actual: str) -> None:
    assert problems(expected, actual)


@pytest.mark.parametrize(
    ("expected", "actual", "needle"),
    [
        ("tensor([1., 2.])", "tensor([[1., 2.]])", "shape"),
        ("tensor([1., 2.])", "tensor([1., 2.], dtype=torch.float64)", "dtype"),
        ("tensor([1, 2])", "tensor([1., 2.])", "dtype"),
        ("tensor([True, False])", "tensor([1, 0])", "dtype"),
        ("tensor([2.], grad_fn=<MulBackward0>)", "tensor([2.])", "grad_fn"),
        ("tensor([2.], requires_grad=True)", "tensor([2.])", "requires_grad"),
        (
            "Parameter containing:\ntensor([2.], requires_grad=True)",
            "tensor([2.], requires_grad=True)",
            "Parameter",
        ),
        ("1", "1.0", "int"),
        (
            "Linear(in_features=3, out_features=4, bias=True)",
            "Linear(in_features=3, out_features=5, bias=True)",
            "expected 4",
        ),
        ("SGD (lr: 0.1)", "Adam (lr: 0.1)", "SGD"),
        ("tensor(1.)", "1.0", "TensorValue"),
        ("tensor(1.) tensor(2.)", "tensor(1.)", "tokens"),
    ],
    ids=[
        "shape",
        "dtype",
        "int-dtype",
        "bool-dtype",
        "grad-fn",
        "requires-grad",
        "parameter",
        "int-vs-float",
        "module-repr",
        "words",
        "tensor-vs-number",
        "count",
    ],
)
def test_structure_mismatches_are_reported(expected: str, actual: str, needle: str) -> None:
    found = problems(expected, actual)
    assert found
    assert needle in " ".join(found)


def test_grad_fn_name_compared_only_when_asked() -> None:
    expected, actual = (
        "tensor([2.], grad_fn=<ReluBackward0>)",
        "tensor([2.], grad_fn=<FusedBackward>)",
    )
    assert problems(expected, actual)
    assert problems(expected, actual, grad_fn_names=False) == []


def test_values_inside_text_and_containers() -> None:
    printed = "torch.return_types.max(\nvalues=tensor([0.6122, 1.4114]),\nindices=tensor([1, 1]))"
    kinds = [type(t).__name__ for t in parse_output(printed)]
    assert kinds.count("TensorValue") == 2
    nested = "(tensor([[1., 2.]], dtype=torch.float64), [torch.Size([2, 3]), {'lr': 1e-3}], None)"
    (value,) = parse_output(nested)
    assert value.kind == "tuple"
    assert value.items[0].dtype == torch.float64
    assert value.items[0].shape == (1, 2)
    assert problems(nested, nested.replace("1e-3", "1e-4"))


def test_empty_and_scalar_tensors_parse() -> None:
    (empty,) = parse_output("tensor([], size=(0, 3), dtype=torch.float64)")
    assert (empty.shape, empty.dtype) == ((0, 3), torch.float64)
    (scalar,) = parse_output("tensor(3, device='cuda:0')")
    assert (scalar.shape, scalar.dtype) == ((), torch.int64)


# --------------------------------------------------------------------------- pages


def test_page_parser_ids_lines_and_kinds() -> None:
    text = textwrap.dedent(
        """\
        # Title

        ```text
        <!-- conformance: session id=not-a-directive -->
        ```

        <!-- conformance: session id=first family=adam erratum=E-1,E-2 requires=torch>=2.4 -->
        ```python
        >>> 1 + 1
        2
        ```

        <!-- conformance: shapes id=table -->
        | module | input | output |
        | --- | --- | --- |
        | `nn.Linear(3, 4)` | (2, 3) | (2, 4) |
        """
    )
    first, table = parse_page("dir/page.md", text).directives
    assert (first.slug, first.kind, first.line) == ("first", "session", 7)
    assert (first.family, first.errata, first.requires) == ("adam", ("E-1", "E-2"), ("torch>=2.4",))
    assert first.blocks[0].statements[0].lineno == 9
    assert (table.kind, table.tables[0].rows[0][0]) == ("shapes", 16)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "x\n\n<!-- conformance: sesion id=a -->\n```python\n>>> 1\n1\n```\n",
            "p.md:3: unknown directive kind 'sesion'",
        ),
        (
            "<!-- conformance: session -->\n```python\n>>> 1\n1\n```\n",
            "p.md:1: session directive without id",
        ),
        (
            "<!-- conformance: session id=a colour=red -->\n```python\n>>> 1\n1\n```\n",
            "p.md:1: unknown directive option 'colour'",
        ),
        (
            "<!-- conformance: session id=a -->\n```python\n>>> 1\n1\n```\n\n"
            "<!-- conformance: session id=a -->\n```python\n>>> 1\n1\n```\n",
            "p.md:7: duplicate id 'a' (first used on line 1)",
        ),
        (
            "<!-- conformance: shapes id=a -->\n\nno table\n",
            "p.md:1: shapes directive not followed by a table",
        ),
        ("<!-- conformance: session id=a -->\n```bash\nls\n```\n", "expected a python code block"),
        (
            "<!-- conformance: milestones id=a family=adam -->\n```python\n# implementation: x\n"
            "optimizer = scheduler = None\n```\n\n| step | lr |\n| --- | --- |\n| 0 | 1 |\n",
            "p.md:1: a family table needs exactly one block without '# implementation: NAME'",
        ),
        (
            "<!-- conformance: milestones id=a -->\n```python\nx = 1\n```\n\n"
            "| step | lr |\n| --- | --- |\n| 2 | 1 |\n| 1 | 1 |\n",
            "p.md:9: steps must increase: 1 after 2",
        ),
        (
            "<!-- conformance: milestones id=a -->\n```python\nx = 1\n```\n\n"
            "| step | lr | momentum |\n| --- | --- | --- |\n| 0 | 0.1 | - |\n| 1 | 0.1 | True |\n",
            "p.md:9: momentum 'True' is not a number",
        ),
        (
            "<!-- conformance: milestones id=a -->\n```python\nx = 1\n```\n\n"
            "| step | `lr[1]` |\n| --- | --- |\n| 0 | `0.1x` |\n",
            "p.md:8: `lr[1]` '0.1x' is not a number",
        ),
        (
            "<!-- conformance: milestones id=a family=adam -->\n```python\n"
            "# implementation: torch.optim\noptimizer = scheduler = None\n```\n"
            "```python\noptimizer = scheduler = None\n```\n\n"
            "| step | lr |\n| --- | --- |\n| 0 | 1 |\n",
            "p.md:1: block name 'torch.optim' has a dot",
        ),
    ],
    ids=[
        "unknown-kind",
        "no-id",
        "unknown-option",
        "duplicate-id",
        "no-table",
        "not-python",
        "family-blocks",
        "steps",
        "milestone-cell",
        "milestone-cell-in-code",
        "dotted-block-name",
    ],
)
def test_page_errors_name_page_and_line(text: str, message: str) -> None:
    with pytest.raises(PageError) as raised:
        parse_page("p.md", text)
    assert message in str(raised.value)


def test_table_cells_and_shapes() -> None:
    assert split_cells(r"| `a | b` | c \| d |") == ["`a | b`", "c | d"]
    assert parse_shapes("`(5, 3, 10); ((2, 3, 20), (2, 3, 20))`") == [
        (5, 3, 10),
        ((2, 3, 20), (2, 3, 20)),
    ]
    assert parse_shapes("torch.Size([2, 3])") == [(2, 3)]


def test_requirements_use_packaging_specifiers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert requirement_problem(("torch>=2.0,<99", "packaging")) is None
    assert "needs torch>=99, this is torch" in requirement_problem(("torch>=99",))
    assert "not installed" in requirement_problem(("no-such-distribution-xyz",))
    assert "unreadable requirement" in requirement_problem(("torch>>2",))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET=1" in requirement_problem(("triton-interpreter",))
    if not torch.cuda.is_available():
        assert requirement_problem(("cuda",)) == "needs CUDA, which this machine does not have"


def test_natural_sort_of_row_ids() -> None:
    ids = ["p.md::a[step=10-x]", "p.md::a[step=2-x]", "p.md::a[step=100-x]", "p.md::a[step=9-x]"]
    assert sorted(ids, key=natural_key)[:2] == ["p.md::a[step=2-x]", "p.md::a[step=9-x]"]


# --------------------------------------------------------------------------- registry


def test_registry_families_validation_and_plugins() -> None:
    registry = builtin_registry()
    assert set(registry.families) == {
        "conv2d",
        "conv2d_relu",
        "adam",
        "adamw",
        "onecycle",
        "warmup_decay",
        "cosine_restarts",
        "noam",
        "plateau",
        "chained",
    }
    assert [i.name for i in registry.implementations("conv2d", "session")] == ["torch.nn.Conv2d"]
    assert registry.implementations("warmup_decay")[0].load().__name__ == "WarmupDecayLR"
    # torch's class is the reference where torch has one; torchkit's drop-in comes second.
    loaded = {
        family: [i.load() for i in registry.implementations(family)]
        for family in ("cosine_restarts", "plateau", "chained")
    }
    assert loaded == {
        "cosine_restarts": [tk_lr_scheduler.CosineRestartsLR],
        "plateau": [torch.optim.lr_scheduler.ReduceLROnPlateau, tk_lr_scheduler.ReduceLROnPlateau],
        "chained": [torch.optim.lr_scheduler.ChainedScheduler, tk_lr_scheduler.ChainedScheduler],
    }
    with pytest.raises(ValueError, match="unknown family 'sgd'"):
        registry.register("sgd", "x", object())
    with pytest.raises(ValueError, match="already registered"):
        registry.register("adam", "torch.optim.Adam", torch.optim.Adam)
    with pytest.raises(ValueError, match="cannot rebind"):
        registry.add_family("adam", "MyAdam")
    with pytest.raises(ValueError, match="cannot be imported"):
        Registry().load(["no_such_conformance_plugin"])
    with pytest.raises(ValueError, match="exposes neither"):
        Registry().load(["json"])
    # a plain word is a milestone block's name ("# implementation: torch"): ids would clash
    with pytest.raises(ValueError, match=r"must be a dotted name .* got 'torch'"):
        registry.register("warmup_decay", "torch", object())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("    raise ValueError('no such option')", "ValueError: no such option"),
        ("    registry.register('sgd', 'a.B', object())", "ValueError: unknown family 'sgd'"),
        ("    return {}['missing']", "KeyError: 'missing'"),
    ],
    ids=["value-error", "bad-registration", "bug"],
)
def test_plugin_errors_name_the_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    (tmp_path / "conformance_plugin_broken.py").write_text(
        f"def register_conformance(registry):\n{body}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "conformance_plugin_broken", raising=False)
    expected = "conformance implementation module 'conformance_plugin_broken' could not register: "
    with pytest.raises(ValueError, match=re.escape(expected + message)):
        builtin_registry().load(["conformance_plugin_broken"])


def test_plugin_module_registers_declares_expectations_or_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conformance_plugin_fn.py").write_text(
        "import torch\n\nCONFORMANCE_EXPECTATIONS = 'known.txt'\n\n"
        "def register_conformance(registry):\n"
        "    registry.add_family('sgd', 'SGD')\n"
        "    registry.register('sgd', 'torch.optim.SGD', torch.optim.SGD)\n"
        "    registry.register('conv2d', 'mypkg.Conv', 'mypkg:Conv', kinds={'shapes'})\n"
    )
    (tmp_path / "conformance_plugin_missing.py").write_text(
        "from torchkit.conformance.registry import PluginUnavailable\n\n"
        "def register_conformance(registry):\n"
        "    raise PluginUnavailable('mylib is not installed')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = builtin_registry()
    registry.load(["conformance_plugin_fn", "conformance_plugin_fn", "conformance_plugin_missing"])
    assert registry.loaded == ["conformance_plugin_fn"]
    assert registry.expectations == [Path("known.txt")]
    assert registry.unavailable == {"conformance_plugin_missing": "mylib is not installed"}
    assert registry.families["sgd"] == "SGD"
    added = registry.implementations("conv2d", "shapes")[-1]
    assert (added.name, added.origin, added.kinds) == (
        "mypkg.Conv",
        "conformance_plugin_fn",
        frozenset({"shapes"}),
    )
    with pytest.raises(ImplementationUnavailable, match="No module named 'mypkg'"):
        added.load()


def test_expectations_format() -> None:
    rules = parse_expectations(
        "# comment\nreference/a.md::x[row=*]  tracked in #12\nskip docs/b.md::y  needs CUDA\n"
    )
    assert [(r.pattern, r.action, r.reason, r.source) for r in rules] == [
        ("reference/a.md::x[row=*]", "xfail", "tracked in #12", "<expectations>:2"),
        ("b.md::y", "skip", "needs CUDA", "<expectations>:3"),
    ]
    assert rules[0].matches("reference/a.md::x[row=3-torch.nn.Conv2d]")
    assert not rules[0].matches("reference/a.md::xy[row=3]")  # brackets are literal
    # any run of whitespace separates the words, tabs included
    (tabbed,) = parse_expectations("skip\treference/a.md::x\t\tneeds  CUDA \n")
    assert (tabbed.action, tabbed.pattern, tabbed.reason) == (
        "skip",
        "reference/a.md::x",
        "needs  CUDA",
    )
    (plain,) = parse_expectations("reference/a.md::x\tknown\n")
    assert (plain.action, plain.pattern, plain.reason) == ("xfail", "reference/a.md::x", "known")
    with pytest.raises(ValueError, match="expected 'PATTERN REASON'"):
        parse_expectations("reference/a.md::x\n")
    with pytest.raises(ValueError, match="expected 'PATTERN REASON'"):
        parse_expectations("skip\n")
    with pytest.raises(ValueError, match="is not a conformance id"):
        parse_expectations("reference/a.md reason\n")


# --------------------------------------------------------------------------- evaluator


def examples(text: str, registry: Registry | None = None) -> dict[str, object]:
    """The items of one page held in a Sybil document, by name, ready to evaluate."""
    registry = registry or builtin_registry()
    document = PageDocument(textwrap.dedent(text), "page.md")
    for region in ConformanceParser(Path("."), registry, evaluate)(document):
        document.add(region)
    setup_page(document.namespace, registry)
    return {example.parsed.name: example for example in document.examples()}


@pytest.mark.interpreter
def test_shape_rows_run_every_implementation_of_the_family() -> None:
    found = examples(
        """\
        <!-- conformance: shapes id=conv family=conv2d -->
        | module | input | output |
        | --- | --- | --- |
        | `Conv2d(1, 2, 3)` | (1, 1, 5, 5) | (1, 2, 3, 3) |
        | `Conv2d(1, 2, 3, stride=2)` | (1, 1, 5, 5) | (1, 2, 3, 3) |
        """
    )
    assert list(found) == [
        "conv[row=1-torch.nn.Conv2d]",
        "conv[row=1-torchkit.nn.FusedConv2dReLU]",
        "conv[row=2-torch.nn.Conv2d]",
        "conv[row=2-torchkit.nn.FusedConv2dReLU]",
    ]
    results = [evaluate(example) for example in found.values()]
    assert results[:2] == [None, None]
    for message in results[2:]:
        assert re.search(r"page.md:5: .* shape\(s\) \(1, 2, 3, 3\), got \(1, 2, 2, 2\)", message)


def test_shape_rows_with_embeddings_and_state_tuples() -> None:
    found = examples(
        """\
        <!-- conformance: shapes id=rnn -->
        | module | input | output | note |
        | --- | --- | --- | --- |
        | `nn.Embedding(5, 3)` | (2, 4) | (2, 4, 3) | indices below 5 |
        | `nn.LSTM(4, 6, 2)` | (5, 3, 4); ((2, 3, 6), (2, 3, 6)) | (5, 3, 6); (2, 3, 6); (2, 3, 6) |
        | `nn.LSTM(4, 6, 2)` | (5, 3, 4) | (5, 3, 6); (2, 3, 6); (1, 3, 6) | wrong |
        """
    )
    first, second, third = (evaluate(e) for e in found.values())
    assert (first, second) == (None, None)
    assert "got (5, 3, 6); (2, 3, 6); (2, 3, 6)" in third


def test_milestones_pass_metrics_and_check_every_block() -> None:
    found = examples(
        """\
        <!-- conformance: milestones id=plateau -->
        ```python
        # implementation: torch
        optimizer = optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
        scheduler = lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
        metrics = [1.0] * 10
        ```
        ```python
        # implementation: lambda
        optimizer = optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
        scheduler = lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 ** max(s - 1, 0))
        ```

        | step | lr | momentum | note |
        | --- | --- | --- | --- |
        | 1 | 0.1 | 0.9 | |
        | 2 | 0.05 | - | |
        | 5 | 0.003125 | | wrong: 0.00625 |
        """
    )
    assert list(found)[:2] == ["plateau[step=1-torch]", "plateau[step=1-lambda]"]
    results = {name: evaluate(example) for name, example in found.items()}
    assert [name for name, problem in results.items() if problem] == [
        "plateau[step=5-torch]",
        "plateau[step=5-lambda]",
    ]
    assert "lr at step 5: 0.00625 differs from 0.003125" in results["plateau[step=5-torch]"]


def test_milestone_cells_written_as_integers_match_floats() -> None:
    found = examples(
        """\
        <!-- conformance: milestones id=decay -->
        ```python
        optimizer = optim.SGD([torch.zeros(1, requires_grad=True)], lr=1, momentum=0)
        scheduler = lr_scheduler.LambdaLR(optimizer, lambda s: 1e-17 if s else 1.0)
        ```

        | step | lr | momentum |
        | --- | --- | --- |
        | 0 | 1 | 0 |
        | 1 | 0 | 0 |
        | 2 | 1 | 0 |
        """
    )
    results = {name: evaluate(example) for name, example in found.items()}
    # a decayed 0 matches 1e-17 (the absolute floor), momentum 0 matches 0.0, lr 1 matches 1.0
    assert results["decay[step=0]"] is None
    assert results["decay[step=1]"] is None
    assert results["decay[step=2]"] == (
        "page.md:11: lr at step 2: 1e-17 differs from 1.0 by 1 (tolerance 1e-07)"
    )


FAMILY_TABLE = """\
<!-- conformance: milestones id=start family={family} -->
```python
# implementation: torch
optimizer = optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
scheduler = lr_scheduler.ConstantLR(optimizer, factor=0.04, total_iters=5)
```
```python
optimizer = optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
scheduler = OneCycleLR(optimizer, max_lr=0.1, total_steps=10)
```

| step | lr |
| --- | --- |
| 0 | 0.004 |
"""


def test_items_sharing_a_line_report_that_line_and_column_one() -> None:
    found = examples(FAMILY_TABLE.format(family="onecycle") + "| 1 | 0.1 |\n")
    where = {name: (e.line, e.column) for name, e in found.items()}
    assert where == {
        "start[step=0-torch]": (14, 1),
        "start[step=0-torch.optim.lr_scheduler.OneCycleLR]": (14, 1),
        "start[step=0-torchkit.optim.lr_scheduler.OneCycleLR]": (14, 1),
        "start[step=1-torch]": (15, 1),
        "start[step=1-torch.optim.lr_scheduler.OneCycleLR]": (15, 1),
        "start[step=1-torchkit.optim.lr_scheduler.OneCycleLR]": (15, 1),
    }
    names = {name: e.parsed.implementation_name for name, e in found.items()}
    assert set(names.values()) == {
        "torch",
        "torch.optim.lr_scheduler.OneCycleLR",
        "torchkit.optim.lr_scheduler.OneCycleLR",
    }


def test_family_table_runs_its_unnamed_block_per_implementation() -> None:
    registry = builtin_registry()
    registry.register(
        "warmup_decay",
        "mine.halved",
        lambda optimizer, *a, **k: torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5),
    )
    found = examples(
        """\
        <!-- conformance: milestones id=warm family=warmup_decay -->
        ```python
        # implementation: torch
        optimizer = optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        scheduler = lr_scheduler.LinearLR(optimizer, start_factor=0.5, total_iters=1)
        ```
        ```python
        optimizer = optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        scheduler = WarmupDecayLR(optimizer, 1, 10, warmup_start_factor=0.5, decay="constant")
        ```

        | step | lr |
        | --- | --- |
        | 0 | 0.05 |
        | 1 | 0.1 |
        """,
        registry,
    )
    assert list(found)[:3] == [
        "warm[step=0-torch]",
        "warm[step=0-torchkit.optim.lr_scheduler.WarmupDecayLR]",
        "warm[step=0-mine.halved]",
    ]
    failing = [name for name, example in found.items() if evaluate(example)]
    assert failing == ["warm[step=1-mine.halved]"]


def test_exceptions_and_silent_statements() -> None:
    found = examples(
        """\
        <!-- conformance: session id=expected-error -->
        ```python
        >>> nn.Linear(3, 4)(torch.zeros(2, 5))
        Traceback (most recent call last):
            ...
        RuntimeError: mat1 and mat2 shapes cannot be multiplied
        ```

        <!-- conformance: session id=wrong-type -->
        ```python
        >>> int("x")
        Traceback (most recent call last):
        TypeError: invalid literal
        ```

        <!-- conformance: session id=unexpected-output -->
        ```python
        >>> nn.ReLU()
        ```

        <!-- conformance: session id=script -->
        ```python
        w = torch.empty(100).uniform_(-0.5, 0.5)
        assert (w.abs() <= 0.5).all()
        ```

        <!-- conformance: session id=failing-script -->
        ```python
        assert False, "the script checks a property"
        ```
        """
    )
    results = {name: evaluate(example) for name, example in found.items()}
    assert results["expected-error"] is None
    assert "expected TypeError, got ValueError" in results["wrong-type"]
    assert "expected no output, got 'ReLU ()'" in results["unexpected-output"]
    assert results["script"] is None
    assert "the script checks a property" in results["failing-script"]


def test_family_runs_do_not_leak_into_later_sessions() -> None:
    found = examples(
        """\
        <!-- conformance: session id=build family=adam -->
        ```python
        >>> opt = Adam([torch.zeros(1, requires_grad=True)], lr=0.01)
        ```

        <!-- conformance: session id=inspect -->
        ```python
        >>> type(opt).__name__
        'Adam'
        ```
        """
    )
    assert [evaluate(example) for example in found.values()] == [None, None, None]
    # the FusedAdam run bound Adam to FusedAdam for that item only; run `inspect` again alone
    assert evaluate(found["inspect"]) is None


def test_page_state_is_isolated_from_other_pages() -> None:
    first = examples(
        """\
        <!-- conformance: session id=float64 -->
        ```python
        >>> torch.set_default_dtype(torch.float64)
        >>> _ = torch.manual_seed(7)
        ```

        <!-- conformance: session id=after -->
        ```python
        >>> torch.tensor([1.0]).dtype
        torch.float64
        ```
        """
    )
    second = examples(
        """\
        <!-- conformance: session id=default -->
        ```python
        >>> torch.tensor([1.0]).dtype
        torch.float32
        ```
        """
    )
    rng = torch.get_rng_state()
    assert evaluate(first["float64"]) is None
    assert torch.get_default_dtype() == torch.float32  # restored for the caller
    assert evaluate(second["default"]) is None
    assert evaluate(first["after"]) is None  # the page keeps its own default dtype
    assert torch.equal(torch.get_rng_state(), rng)


def test_unknown_family_items_skip_with_a_reason() -> None:
    (case,) = (e.parsed for e in examples(MYSTERY_PAGE).values())
    assert case.name == "x"
    assert "family 'mystery' is not registered here" in case.skip
    registry = builtin_registry()
    with pytest.raises(PageError, match="family 'mystery' is not registered"):
        list(
            ConformanceParser(Path("."), registry, evaluate, strict=True)(
                Document(MYSTERY_PAGE, "p.md")
            )
        )


MYSTERY_PAGE = """\
<!-- conformance: session id=x family=mystery -->
```python
>>> Mystery()
1
```
"""


# --------------------------------------------------------------------------- end to end


# Plugins the harness does not need, left out of in-process runs: pytester forgets the modules
# a run imports, and Hypothesis would be imported again on every run.
LEAN = (
    "-p",
    "no:cacheprovider",
    "-p",
    "no:hypothesispytest",
    "-p",
    "no:xdist",
    "-p",
    "no:randomly",
)


class Docs:
    """A docs tree in a pytester folder, and a way to run the harness on it."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester

    def page(self, name: str, text: str) -> Path:
        path = self.pytester.path / "docs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest("--conformance-docs=docs", *LEAN, *args)


@pytest.fixture(scope="module")
def _preimported() -> None:
    # pytester drops the modules imported after its snapshot (taken when the function-scoped
    # `pytester` fixture starts); Triton's native extension cannot be imported twice in one
    # process, so what the harness may load is imported before any snapshot.
    for module in PREIMPORT:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


@pytest.fixture
def docs(_preimported: None, pytester: pytest.Pytester) -> Docs:
    return Docs(pytester)


SESSION_PAGE = """\
# Losses

<!-- conformance: session id=cross-entropy -->
```python
>>> loss = nn.CrossEntropyLoss()
>>> a1 = torch.tensor([[0.1, 0.8, 0.1]])
>>> loss(a1, torch.tensor([1]))
tensor({figure})
```

<!-- conformance: session id=later -->
```python
>>> loss(a1, torch.tensor([0]))
tensor(1.3897)
```
"""

SHAPES_PAGE = """\
<!-- conformance: shapes id=linear -->
| module | input | output |
| --- | --- | --- |
| `nn.Linear(3, 4)` | (2, 3) | (2, 4) |
| `nn.Linear(3, 5)` | (7, 3) | (7, 5) |
"""


def test_collects_every_page_recursively_with_stable_ids_and_counts(docs: Docs) -> None:
    docs.page("losses.md", SESSION_PAGE.format(figure="0.6897"))
    docs.page("reference/shapes.md", SHAPES_PAGE)
    docs.page("plain.md", "# No directives here\n")
    result = docs.run("--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line]
    assert ids == [
        "docs/losses.md::cross-entropy",
        "docs/losses.md::later",
        "docs/reference/shapes.md::linear[row=1]",
        "docs/reference/shapes.md::linear[row=2]",
    ]
    result = docs.run("-v")
    result.stdout.fnmatch_lines(
        ["conformance: torch *; docs */docs (2 pages)", "conformance: 4 items on 2 pages: 4 passed"]
    )


def test_exact_page_selection(docs: Docs) -> None:
    docs.page("schedulers.md", SHAPES_PAGE)
    docs.page("reference/lr_schedulers.md", SHAPES_PAGE)
    result = docs.run("--conformance-page=schedulers.md", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*docs (1 page, selected on the command line)",
            "conformance: 2 items on 1 page: 2 passed",
        ]
    )
    result = docs.run(
        "--conformance-page=schedulers.md", "--conformance-page=docs/reference/lr_schedulers.md"
    )
    result.assert_outcomes(passed=4)
    result = docs.run("--conformance-page=nowhere.md")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--conformance-page: no page [[]'nowhere.md'[]] under *"])


def test_changed_figure_fails_and_names_the_line(docs: Docs) -> None:
    docs.page("good.md", SESSION_PAGE.format(figure="0.6897"))
    docs.page("bad.md", SESSION_PAGE.format(figure="0.6997"))
    result = docs.run()
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ bad.md line=5 column=1 _*",
            "*bad.md:7: output differs*",
            "FAILED docs/bad.md::cross-entropy*",
        ]
    )


def test_items_run_on_their_own(docs: Docs) -> None:
    docs.page("losses.md", SESSION_PAGE.format(figure="0.6897"))
    result = docs.run("-k", "later")  # needs `loss` and `a1` from the session above
    result.assert_outcomes(passed=1)


@pytest.mark.usefixtures("_preimported")
def test_conformance_options_alone_collect_the_pages(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.path.joinpath("spec").mkdir()
    pytester.path.joinpath("spec", "losses.md").write_text(SESSION_PAGE.format(figure="0.6897"))
    monkeypatch.chdir(pytester.mkdir("elsewhere"))  # no argument, and no page below here
    result = pytester.runpytest("--conformance-docs=../spec", *LEAN)
    result.assert_outcomes(passed=2)
    # the pages that come with torchkit, from an empty folder
    result = pytester.runpytest("--conformance-page=reference/losses.md", "--co", "-q", *LEAN)
    assert result.ret == pytest.ExitCode.OK
    assert "docs/reference/losses.md::cross-entropy" in result.outlines


def test_docs_root_choice(tmp_path: Path) -> None:
    package = tmp_path / "site" / "torchkit" / "conformance"
    (package / "docs").mkdir(parents=True)
    here, ini_dir = tmp_path / "run", tmp_path / "clone"
    assert docs_root("d", "docs", ini_dir, here, package) == here / "d"
    assert docs_root(None, "docs", ini_dir, here, package) == ini_dir / "docs"
    assert docs_root(None, "", ini_dir, here, package) == package / "docs"
    editable = tmp_path / "src" / "torchkit" / "conformance"  # holds no pages
    assert docs_root(None, "", ini_dir, here, editable) == tmp_path / "docs"


def test_this_suite_runs_the_checkout_pages(pytestconfig: pytest.Config) -> None:
    """However torchkit is installed, this repository's runs check its own docs/."""
    assert pytestconfig.getini("conformance_docs") == "docs"
    run = pytestconfig.pluginmanager.get_plugin("torchkit-conformance")
    assert run.root == ROOT / "docs"


def clone_like(pytester: pytest.Pytester) -> None:
    """A project laid out as this repository: docs/ collected through tests/conformance."""
    pytester.makeini("[pytest]\nconformance = true\nconformance_docs = docs\ntestpaths = tests\n")
    for name, text in [
        ("docs/a.md", SESSION_PAGE.format(figure="0.6897")),
        ("docs/b/c.md", SHAPES_PAGE),
    ]:
        pytester.path.joinpath(name).parent.mkdir(parents=True, exist_ok=True)
        pytester.path.joinpath(name).write_text(text)
    pytester.mkpydir("tests")
    pytester.path.joinpath("tests", "conformance").mkdir()
    pytester.path.joinpath("tests", "conformance", "conftest.py").write_text(
        "from pathlib import Path\n\nfrom torchkit.conformance.plugin import collect_docs\n\n\n"
        "def pytest_collect_file(file_path, parent):\n"
        "    return collect_docs(parent) if file_path == Path(__file__) else None\n"
    )


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest("--co", "-q", *LEAN, *args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    return [line for line in result.outlines if "::" in line]


EVERY_ID = [
    "docs/a.md::cross-entropy",
    "docs/a.md::later",
    "docs/b/c.md::linear[row=1]",
    "docs/b/c.md::linear[row=2]",
]


@pytest.mark.parametrize(
    ("args", "first"),
    [
        ((), 0),
        (("tests/conformance",), 0),
        (("tests/conformance", "docs/a.md"), 0),
        ((".",), 0),
        (("tests/conformance", "--conformance-summary=s.json"), 0),
        (("docs",), 0),
        # a page named with an item: pytest collects that page, and only that item of it
        (("tests/conformance", "docs/a.md::later"), 1),
    ],
    ids=["testpaths", "suite", "suite-and-page", "dot", "with-option", "docs", "suite-and-item"],
)
@pytest.mark.usefixtures("_preimported")
def test_a_page_is_collected_once(
    pytester: pytest.Pytester, args: tuple[str, ...], first: int
) -> None:
    clone_like(pytester)
    assert sorted(collected(pytester, *args)) == EVERY_ID[first:]


@pytest.mark.usefixtures("_preimported")
def test_printed_ids_run_again(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    clone_like(pytester)
    assert collected(pytester, "docs/b/c.md::linear[row=2]") == ["docs/b/c.md::linear[row=2]"]
    monkeypatch.chdir(pytester.path / "tests")  # not a path from here: read as an id
    assert collected(pytester, "docs/a.md::later") == ["docs/a.md::later"]
    monkeypatch.chdir(pytester.mkdir("elsewhere"))  # pages outside the rootdir, as installed
    docs = "--conformance-docs=../docs"
    assert collected(pytester, docs) == EVERY_ID
    assert collected(pytester, docs, "docs/b/c.md::linear") == EVERY_ID[2:]
    assert collected(pytester, docs, "docs/b") == EVERY_ID[2:]
    ids = ["docs/b/c.md::linear[row=1]", "docs/a.md::later"]
    assert collected(pytester, "--pyargs", "torchkit.conformance", docs, *ids) == sorted(ids)
    result = pytester.runpytest(docs, "docs/a.md::nothing", *LEAN)
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*not found: docs/a.md::nothing*"])


def test_third_party_implementation_expectations_and_summary(
    docs: Docs, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        thirdparty=(
            "import torch\n\n"
            "class SlowAdam(torch.optim.Adam):\n"
            "    def __init__(self, params, lr=1e-3, **kw):\n"
            "        super().__init__(params, lr=lr / 2, **kw)\n\n"
            "CONFORMANCE_IMPLEMENTATIONS = {'adam': {\n"
            "    'thirdparty.SlowAdam': SlowAdam,\n"
            "    'thirdparty.Missing': 'no_such_module_xyz:Adam',\n"
            "}}\n"
        ),
        unavailable=(
            "from torchkit.conformance.registry import PluginUnavailable\n\n"
            "def register_conformance(registry):\n"
            "    raise PluginUnavailable('somelib is not installed')\n"
        ),
    )
    pytester.syspathinsert()
    docs.page(
        "adam.md",
        """\
        <!-- conformance: session id=adam-lr family=adam -->
        ```python
        >>> Adam([torch.zeros(1, requires_grad=True)]).param_groups[0]["lr"]
        0.001
        ```
        """,
    )
    expectations = pytester.path / "expected.txt"
    expectations.write_text(
        "adam.md::adam-lr[thirdparty.SlowAdam]  halves the learning rate on purpose\n"
        "adam.md::nothing-matches  stale entry\n"
    )
    monkeypatch.setenv("TORCHKIT_CONFORMANCE_IMPL", "thirdparty")
    result = docs.run(
        "-v",
        "-rxs",
        "--conformance-impl=unavailable",
        f"--conformance-expectations={expectations}",
        "--conformance-summary=summary.json",
    )
    result.assert_outcomes(passed=2, failed=1, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "*adam (Adam): torch.optim.Adam, torchkit.optim.FusedAdam, "
            "thirdparty.SlowAdam [[]from thirdparty[]]*",
            "*plugin unavailable not tested: somelib is not installed",
            "*expectations: *expected.txt (2 entries)",
            "*not available: ModuleNotFoundError*no_such_module_xyz*",
            "conformance: plugin unavailable was not tested: somelib is not installed",
            "conformance: 4 items on 1 page: 1 failed, 2 passed, 1 xfailed",
            "conformance: adam thirdparty.Missing: 1 failed",
            "conformance: adam thirdparty.SlowAdam: 1 xfailed",
            "*expectation *expected.txt:2 matched no item: adam.md::nothing-matches",
            "XFAIL docs/adam.md::adam-lr[[]thirdparty.SlowAdam[]] - halves the learning rate*",
        ]
    )
    summary = json.loads((pytester.path / "summary.json").read_text())
    items = {i["id"]: i for i in summary["pages"]["adam.md"]["items"]}
    assert items["adam.md::adam-lr[thirdparty.SlowAdam]"]["outcome"] == "xfailed"
    assert items["adam.md::adam-lr[thirdparty.SlowAdam]"]["reason"] == (
        "halves the learning rate on purpose"
    )
    assert items["adam.md::adam-lr[torch.optim.Adam]"]["outcome"] == "passed"
    per_implementation = {i["implementation"]: i for i in summary["implementations"]}
    assert per_implementation["thirdparty.SlowAdam"] == {
        "family": "adam",
        "implementation": "thirdparty.SlowAdam",
        "page": "adam.md",
        "failed": 0,
        "passed": 0,
        "skipped": 0,
        "xfailed": 1,
        "xpassed": 0,
    }


def test_requires_and_unknown_family_skip_with_reasons(docs: Docs) -> None:
    docs.page(
        "new.md",
        """\
        <!-- conformance: session id=future requires=torch>=99 -->
        ```python
        >>> torch.future_feature()
        1
        ```
        """,
    )
    docs.page("mystery.md", MYSTERY_PAGE)
    result = docs.run("-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*family 'mystery' is not registered here*"])
    result.stdout.fnmatch_lines(["*needs torch>=99, this is torch*"])
    result = docs.run("--conformance-strict")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*mystery.md:1: family 'mystery' is not registered here*"])


def test_named_blocks_of_family_tables_are_implementations(
    docs: Docs, pytester: pytest.Pytester
) -> None:
    docs.page("known.md", FAMILY_TABLE.format(family="onecycle"))
    docs.page("unknown.md", FAMILY_TABLE.format(family="mystery"))
    result = docs.run("-rs", "--conformance-summary=s.json")
    # the unknown family skips its family block only: the torch block needs no family
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(["*family 'mystery' is not registered here*"])
    summary = json.loads((pytester.path / "s.json").read_text())
    rows = {(r["family"], r["implementation"], r["page"]): r for r in summary["implementations"]}
    assert sorted(rows) == [
        ("mystery", "torch", "unknown.md"),
        ("onecycle", "torch", "known.md"),
        ("onecycle", "torch.optim.lr_scheduler.OneCycleLR", "known.md"),
        ("onecycle", "torchkit.optim.lr_scheduler.OneCycleLR", "known.md"),
    ]
    assert rows[("mystery", "torch", "unknown.md")]["passed"] == 1


def test_expectations_of_deselected_or_unselected_items_are_not_stale(
    docs: Docs, pytester: pytest.Pytester
) -> None:
    docs.page("losses.md", SESSION_PAGE.format(figure="0.6897"))
    docs.page("other.md", SHAPES_PAGE)
    expectations = pytester.path / "expected.txt"
    expectations.write_text(
        "losses.md::later  deselected by -k\n"
        "other.md::linear[row=2]  on a page left out by --conformance-page\n"
        "losses.md::gone  no such item\n"
        "nowhere.md::x  no such page\n"
    )
    rule = f"--conformance-expectations={expectations}"
    result = docs.run(rule, "-k", "cross", "--conformance-page=losses.md")
    result.assert_outcomes(passed=1)
    stale = [line for line in result.outlines if "matched no item" in line]
    assert stale == [
        f"conformance: expectation {expectations}:3 matched no item: losses.md::gone",
        f"conformance: expectation {expectations}:4 matched no item: nowhere.md::x",
    ]


ERRATA_PAGE = """\
<!-- conformance: errata -->

| id | note | claimed | true | why | test |
| --- | --- | --- | --- | --- | --- |
| E-1 | 001 | 2 | 3 | typo | `losses.md::cross-entropy` |
| E-2 | 001 | x | y | old API | {test} |
"""


@pytest.mark.parametrize(
    ("test_cell", "tag", "message"),
    [
        ("`losses.md::later`", "E-2", None),
        ("`losses.md::missing`", "E-2", "names test 'losses.md::missing', which no page defines"),
        ("`losses.md::later`", "E-9", "tagged erratum=E-9, which no errata table lists"),
        ("", "E-2", "erratum 'E-2' names no test"),
    ],
    ids=["consistent", "missing-test", "unknown-erratum", "no-test"],
)
def test_errata_consistency(docs: Docs, test_cell: str, tag: str, message: str | None) -> None:
    docs.page("errata.md", ERRATA_PAGE.format(test=test_cell))
    page = SESSION_PAGE.format(figure="0.6897").replace("id=later", f"id=later erratum={tag}")
    docs.page("losses.md", page)
    result = docs.run("-k", "consistency")
    if message is None:
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([f"*{message}*"])


def test_bad_directive_is_a_collection_error(docs: Docs) -> None:
    docs.page("ok.md", SESSION_PAGE.format(figure="0.6897"))
    docs.page("bad.md", "# Bad\n\n<!-- conformance: sesion id=a -->\n```python\n>>> 1\n1\n```\n")
    result = docs.run()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*docs/bad.md:3: unknown directive kind 'sesion'*"])


def test_summary_markdown_sorts_rows_naturally(docs: Docs, pytester: pytest.Pytester) -> None:
    docs.page("good.md", SESSION_PAGE.format(figure="0.6897"))
    docs.page("bad.md", SESSION_PAGE.format(figure="0.6997"))
    docs.page(
        "sched.md",
        """\
        <!-- conformance: milestones id=s erratum=E-1 -->
        ```python
        optimizer = optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        scheduler = lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        ```

        | step | lr |
        | --- | --- |
        | 2 | 0.025 |
        | 10 | 1 |
        """,
    )
    docs.run("--conformance-summary=out/summary.md")
    text = (pytester.path / "out" / "summary.md").read_text()
    assert "| `bad.md` | 1 | 1 | 0 | 0 | 0 | 0 |" in text  # failed, passed, ..., errata
    assert "| `good.md` | 0 | 2 | 0 | 0 | 0 | 0 |" in text
    assert re.search(r"\| `bad.md::cross-entropy` \| failed \| .*bad.md:7: output differs", text)
    # step 10 is wrong on purpose (0.1 * 0.5**10): it fails for its value and sorts after step 2
    assert (
        "| `sched.md::s[step=10]` | failed | docs/sched.md:10: lr at step 10: 9.765625e-05" in text
    )
    assert text.index("`sched.md::s[step=2]`") < text.index("`sched.md::s[step=10]`")


@pytest.mark.slow
def test_xdist_loadfile_collects_identically(docs: Docs, pytester: pytest.Pytester) -> None:
    docs.page("a.md", SESSION_PAGE.format(figure="0.6897"))
    docs.page("b/c.md", SHAPES_PAGE)
    plain = docs.run("-rA")
    result = pytester.runpytest_subprocess(
        "--conformance-docs=docs",
        *("-n", "2", "--dist", "loadfile", "--conformance-summary=s.json", "-rA"),
    )
    result.assert_outcomes(passed=4)
    summary = json.loads((pytester.path / "s.json").read_text())
    assert sorted(summary["pages"]) == ["a.md", "b/c.md"]

    def passed(run: pytest.RunResult) -> list[str]:
        return sorted(line for line in run.outlines if line.startswith("PASSED "))

    assert passed(result) == passed(plain)
    assert len(passed(plain)) == 4


def test_real_docs_changed_figure_fails(docs: Docs) -> None:
    """The issue's acceptance check on the real page: alter the cross-entropy value."""
    text = (ROOT / "docs" / "reference" / "losses.md").read_text(encoding="utf-8")
    page = parse_page("reference/losses.md", text)
    slugs = [d.slug for d in page.directives]
    position = slugs.index("cross-entropy")
    directive = page.directives[position]
    lines = text.split("\n")
    if position + 1 < len(page.directives):  # keep the page up to this example
        lines = lines[: page.directives[position + 1].line - 1]
    docs.page("reference/losses.md", "\n".join(lines))
    docs.run().assert_outcomes(passed=position + 1)
    statement = next(s for s in directive.blocks[0].statements if "tensor(" in s.want)
    first = statement.want.split("\n")[0]
    index = lines.index(first, statement.lineno - 1)
    lines[index] = re.sub(r"\d(?=[),\]])", lambda m: str((int(m.group()) + 5) % 10), first, count=1)
    assert lines[index] != first
    docs.page("reference/losses.md", "\n".join(lines))
    result = docs.run()
    result.assert_outcomes(passed=position, failed=1)
    result.stdout.fnmatch_lines(["FAILED docs/reference/losses.md::cross-entropy*"])


def test_plugin_costs_nothing_until_enabled(pytester: pytest.Pytester) -> None:
    # A fresh process: configured but not enabled, the plugin has imported neither torch nor
    # the harness by the time tests run.
    pytester.makepyfile(
        test_plain="import sys\n\n\ndef test_one():\n"
        "    assert not {'torch', 'torchkit.conformance.plugin'} & set(sys.modules)\n"
    )
    pytester.path.joinpath("notes.md").write_text(MYSTERY_PAGE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    assert "conformance" not in result.stdout.str()


# --------------------------------------------------------------------------- installed package


@pytest.mark.slow
def test_python_m_torchkit_conformance_runs_from_any_directory(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchkit",
            "conformance",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "--conformance-page=reference/losses.md",
            "docs/reference/activations.md::relu",  # an id as printed: that item too
            "-q",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "conformance: 7 items on 2 pages: 7 passed" in done.stdout
    assert "Warning" not in done.stdout + done.stderr  # PytestAssertRewriteWarning, say
    assert not list(tmp_path.iterdir())  # nothing written where it ran


@pytest.mark.slow
def test_wheel_ships_every_page_and_the_plugin(tmp_path: Path) -> None:
    # Built from a copy of the files git tracks (or would), never in the checkout: a build
    # there leaves build/ behind, and setuptools would ship a page deleted since from it.
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        pytest.skip(f"needs a git checkout: {listed.stderr.strip()}")
    source, tracked = tmp_path / "source", set(filter(None, listed.stdout.split("\0")))
    for name in tracked:
        if (ROOT / name).is_file():  # a file deleted but not staged is listed too
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = ["wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("torchkit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    prefix = "torchkit/conformance/docs/"
    assert {n.removeprefix(prefix) for n in names if n.startswith(prefix)} == pages
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[pytest11]\ntorchkit.conformance = torchkit.conformance" in text
    # what the build left in the copy is what .gitignore ignores
    left = [p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()]
    left = sorted(set(left) - tracked)
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT,
        input="\n".join(left),
        capture_output=True,
        text=True,
        check=False,
    )
    assert left
    assert ignored.stdout.split() == left


def test_docs_state_the_harness_size() -> None:
    """docs/conformance.md gives the harness's line count: it must be today's."""
    files = sorted((ROOT / "src" / "torchkit" / "conformance").glob("*.py"))
    total = sum(len(f.read_text().splitlines()) for f in files)
    page = (ROOT / "docs" / "conformance.md").read_text()
    stated = re.search(r"The harness is ([\d,]+) lines of Python", page)
    assert stated is not None, "docs/conformance.md lost its line count"
    assert int(stated.group(1).replace(",", "")) == total


def test_a_failing_item_shows_no_debug_log_records(docs: Docs) -> None:
    docs.page(
        "logs.md",
        """\
        <!-- conformance: session id=noisy -->
        ```python
        >>> import logging
        >>> logger = logging.getLogger("c10d-NullHandler-dcp_logger")
        >>> logger.setLevel(logging.DEBUG)
        >>> logger.debug("a page of c10d records")
        >>> 1 + 1
        3
        ```
        """,
    )
    result = docs.run()
    result.assert_outcomes(failed=1)
    assert "a page of c10d records" not in result.stdout.str()
