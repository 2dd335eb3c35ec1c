"""The arithmetic behind docs/performance.md: the traffic model and the page-block rewriter.

``benchmarks/`` is a folder of scripts, not a package, so its modules are loaded from their files.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_benchmarks_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


traffic = _load("traffic")
run_all = _load("run_all")


@pytest.mark.parametrize(
    ("dtype", "amsgrad", "fused", "foreach"),
    [
        # fused: read p, g, m, v and write p, m, v: 7 passes; foreach: 18 (see adam_bytes_per_param)
        (torch.float32, False, 28, 72),
        (torch.bfloat16, False, 14, 36),
        (torch.float16, False, 14, 36),
        # amsgrad: v_max read and written (+2), and torch's maximum_ over it (+3)
        (torch.float32, True, 36, 84),
    ],
    ids=["fp32", "bf16", "fp16", "fp32-amsgrad"],
)
def test_adam_bytes_per_parameter(dtype, amsgrad, fused, foreach):
    assert traffic.adam_bytes_per_param(dtype, amsgrad=amsgrad) == (fused, foreach)


def test_adam_traffic_scales_with_parameters_and_groups():
    t = traffic.adam_traffic(1_000_000, 3, torch.float32)
    assert t.fused_bytes == 28 * 1_000_000
    assert t.unfused_bytes == 72 * 1_000_000
    assert (t.fused_launches, t.unfused_launches) == (1, 7 * 3)
    assert t.saving == pytest.approx(1 - 28 / 72)


def test_conv_relu_traffic_counts_the_output_three_times_unfused():
    # LeNet conv2: 64x6x14x14 input, 16 5x5 filters, no padding -> 64x16x10x10 output.
    t = traffic.conv_relu_traffic(64, 6, 16, 14, 5, 1, 0, torch.float32)
    inputs = (64 * 6 * 14 * 14 + 16 * 6 * 5 * 5 + 16) * 4
    output = 64 * 16 * 10 * 10 * 4
    assert t.fused_bytes == inputs + output
    assert t.unfused_bytes == inputs + 3 * output
    assert (t.fused_launches, t.unfused_launches) == (1, 2)


def test_conv_relu_traffic_output_size_follows_stride_and_padding():
    # ResNet's stem: 224x224, 7x7, stride 2, padding 3 -> 112x112.
    t = traffic.conv_relu_traffic(1, 3, 64, 224, 7, 2, 3, torch.float16)
    output = 64 * 112 * 112 * 2
    assert t.unfused_bytes - t.fused_bytes == 2 * output


def test_traffic_table_has_a_row_per_case_and_the_bandwidth_bound():
    cases = traffic.default_cases()
    table = traffic.format_table(cases).splitlines()
    assert len(table) == 2 + len(cases)
    # 25M fp32 parameters, fused: 700 MB at 3.35 TB/s = 208.96 µs.
    row = next(line for line in table if "25,000,000 params, 2 groups, float32" in line)
    assert "| 700.000 |" in row
    assert "208.96 /" in row


PAGE = """intro
<!-- begin: a -->
old a
<!-- end: a -->
middle
<!-- begin: b -->
<!-- end: b -->
outro
"""


def test_replace_block_rewrites_only_the_named_block():
    text = run_all.replace_block(PAGE, "a", "new a\n\n")
    assert text == PAGE.replace("old a", "new a")
    text = run_all.replace_block(text, "b", "| x |")
    assert "<!-- begin: b -->\n| x |\n<!-- end: b -->" in text
    assert text.startswith("intro\n")
    assert text.endswith("outro\n")


def test_replace_block_is_idempotent_and_literal():
    # A body with regex replacement syntax must land verbatim.
    body = r"\1 \g<0> $1"
    once = run_all.replace_block(PAGE, "a", body)
    assert run_all.replace_block(once, "a", body) == once
    assert f"<!-- begin: a -->\n{body}\n<!-- end: a -->" in once


def test_replace_block_names_a_missing_block():
    with pytest.raises(ValueError, match="<!-- begin: c -->"):
        run_all.replace_block(PAGE, "c", "body")
