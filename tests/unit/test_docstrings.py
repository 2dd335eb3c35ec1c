"""Every docstring example of the package runs and prints what it shows."""

import doctest
import importlib
import pkgutil

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
