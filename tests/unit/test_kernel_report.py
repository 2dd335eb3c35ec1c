"""``python -m torchkit kernels``: every kernel compiles for sm_80 and sm_90 without spills.

The report compiles with Triton's real compiler, which the interpreter this suite runs under
(``TRITON_INTERPRET=1``, tests/conftest.py) rules out in-process; so one subprocess with
``TRITON_INTERPRET=0`` produces the whole JSON report, shared by the slow tests below. Triton
caches compiled kernels on disk, so a rerun costs mostly the ``ptxas`` runs.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from torchkit import kernel_report
from torchkit.__main__ import main as torchkit_main

REQUIRED_KEYS = {
    "kernel",
    "arch",
    "config",
    "registers",
    "spill_stores",
    "spill_loads",
    "shared_mem",
}
ARCHS = ("sm_80", "sm_90")


def _jit_kernels_in_source(module_name: str) -> set[str]:
    """Names of the functions a module's source decorates with ``@triton.jit`` (read, not run)."""
    spec = importlib.util.find_spec(module_name)
    assert spec is not None, f"{module_name} not found"
    assert spec.origin is not None, f"{module_name} has no source file"
    tree = ast.parse(Path(spec.origin).read_text())
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if ast.unparse(target) in ("triton.jit", "jit"):
                names.add(node.name)
    return names


@pytest.fixture(scope="module")
def report() -> list[dict[str, Any]]:
    if kernel_report.ptxas_path() is None:
        pytest.skip("the triton wheel ships no ptxas-blackwell binary: nothing to compile with")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torchkit", "kernels", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"python -m torchkit kernels failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


@pytest.mark.slow
def test_rows_have_the_documented_keys_and_real_counts(report):
    assert report, "the report has no rows"
    for row in report:
        assert row.keys() >= REQUIRED_KEYS, f"missing {REQUIRED_KEYS - row.keys()} in {row}"
        assert row["registers"] > 0, row
        assert row["shared_mem"] >= 0, row


@pytest.mark.slow
def test_no_kernel_spills_registers(report):
    spilling = [
        f"{r['kernel']}[{r['variant']}] {r['arch']} {r['config']}: {r['registers']} registers, "
        f"{r['spill_stores']} B stored, {r['spill_loads']} B loaded"
        for r in report
        if r["spill_stores"] or r["spill_loads"]
    ]
    assert not spilling, "register spills:\n" + "\n".join(spilling)


@pytest.mark.slow
@pytest.mark.parametrize("module_name", kernel_report.KERNEL_MODULES)
def test_every_variant_config_and_arch_is_reported(report, module_name):
    specs = importlib.import_module(module_name).aot_specs()
    assert specs, f"{module_name}.aot_specs() is empty"
    reported = Counter((r["kernel"], r["variant"], r["arch"], r["config"]) for r in report)
    for spec in specs:
        kernel = getattr(spec.kernel, "fn", spec.kernel).__name__
        configs = getattr(spec.kernel, "configs", None) or spec.configs
        for config in configs:
            for arch in ARCHS:
                key = (kernel, spec.name, arch, kernel_report.config_label(config))
                assert reported[key] == 1, f"{key} reported {reported[key]} times, expected once"


@pytest.mark.slow
@pytest.mark.parametrize("module_name", kernel_report.KERNEL_MODULES)
def test_every_jit_kernel_of_the_module_is_compiled(report, module_name):
    defined = _jit_kernels_in_source(module_name)
    assert defined, f"no @triton.jit function found in {module_name}"
    missing = defined - {row["kernel"] for row in report}
    assert not missing, f"{module_name}: no aot_specs() variant compiles {sorted(missing)}"


def test_source_scan_finds_jit_kernels():
    # The scan the coverage test relies on, checked against a kernel known to exist.
    assert "_conv2d_relu_fwd_kernel" in _jit_kernels_in_source("torchkit.kernels.conv2d_relu")


def test_compile_report_refuses_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernel_report.compile_report(["sm_80"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"archs": ["sm_70"]}, "unknown arch 'sm_70'"), ({"jobs": 0}, "jobs must be a positive")],
    ids=["unknown-arch", "zero-jobs"],
)
def test_compile_report_validates_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kernel_report.compile_report(**kwargs)


def test_cli_exits_non_zero_under_the_interpreter(capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    import triton  # noqa: F401  (the CLI refuses once Triton was imported as interpreter)

    assert torchkit_main(["kernels", "--arch", "sm_80"]) == 1
    assert "TRITON_INTERPRET=1" in capsys.readouterr().err
