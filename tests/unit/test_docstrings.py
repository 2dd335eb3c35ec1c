"""Every docstring example of the package runs and prints what it shows."""

import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchkit
import torchkit.kernels

# torchkit.kernels is installed from another folder (triton_kernels/), so it is walked on its own.
MODULES = sorted(
    ["torchkit", "torchkit.kernels"]
    + [info.name for info in pkgutil.walk_packages(torchkit.__path__, prefix="torchkit.")]
    + [info.name for info in pkgutil.iter_modules(torchkit.kernels.__path__, "torchkit.kernels.")]
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
        )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


@pytest.mark.slow
def test_doctest_modules_run_without_environment_variables(tmp_path):
    """``pytest --doctest-modules --pyargs torchkit`` passes without ``TRITON_INTERPRET``: the
    examples that launch a kernel on CPU tensors are skipped with the reason (above, under the
    interpreter, they run)."""
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # torchkit.kernels is named too: an editable install keeps it outside torchkit/.
    command = ["--doctest-modules", "--pyargs", "torchkit", "torchkit.kernels", "-rs", "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *command, "-p", "no:randomly", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    skipped = re.findall(r"SKIPPED \[(\d+)\] (\S+): needs Triton's interpreter", done.stdout)
    per_module = {Path(path).name: int(count) for count, path in skipped}
    assert per_module == {"adam.py": 2, "conv2d_relu.py": 1, "conv.py": 1}, done.stdout
