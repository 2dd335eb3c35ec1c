import json
import subprocess
import sys

import pytest
import torch

import torchkit
from torchkit.__main__ import collect_info
from torchkit.backend import (
    Backend,
    force_backend,
    interpreter_enabled,
    select_backend,
    triton_available,
)


def test_cpu_uses_interpreter_only_when_asked(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert select_backend("cpu") is Backend.TORCH
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    expected = Backend.TRITON_INTERPRETER if triton_available() else Backend.TORCH
    assert select_backend(torch.device("cpu")) is expected


def test_meta_device_uses_torch(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert select_backend("meta") is Backend.TORCH


def test_force_backend_pins_and_restores(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    before = select_backend("cpu")
    with force_backend("torch") as chosen:
        assert chosen is Backend.TORCH
        assert select_backend("cpu") is Backend.TORCH
    assert select_backend("cpu") is before


def test_force_backend_refuses_what_cannot_run(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with force_backend(Backend.TRITON), pytest.raises(RuntimeError, match="forced"):
        select_backend("cpu")
    with force_backend(Backend.TRITON_INTERPRETER), pytest.raises(RuntimeError, match="INTERPRET"):
        select_backend("cpu")


def test_force_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"), force_backend("cuda"):
        pass


def test_interpreter_flag_reads_environment(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert interpreter_enabled()
    monkeypatch.delenv("TRITON_INTERPRET")
    assert not interpreter_enabled()


def test_backend_str_is_its_value():
    assert str(Backend.TRITON_INTERPRETER) == "triton-interpreter"


def test_collect_info_reports_versions_and_every_fused_op():
    info = collect_info()
    assert info["torch"] == torch.__version__
    assert info["torchkit"] == torchkit.__version__
    assert info["devices"][0] == "cpu"
    assert set(info["default_backend"]) == set(info["devices"])
    for per_device in info["fused_ops"].values():
        assert set(per_device) == set(info["devices"])
        assert set(per_device.values()) <= {b.value for b in Backend}


@pytest.mark.parametrize("interpret", ["0", "1"])
def test_info_command_exits_zero(interpret):
    env = {"TRITON_INTERPRET": interpret, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "torchkit", "info", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    expected = "triton-interpreter" if interpret == "1" and triton_available() else "torch"
    assert info["default_backend"]["cpu"] == expected


def test_info_command_without_triton(tmp_path):
    # A module finder that hides triton stands in for a machine where it is not installed.
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import importlib.abc, sys\n"
        "class _Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'triton' or name.startswith('triton.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "torchkit", "info"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "triton    not installed" in done.stdout


def test_kernel_sources_are_not_a_top_level_package():
    import torchkit.kernels

    assert torchkit.kernels.__name__ == "torchkit.kernels"
    done = subprocess.run(
        [sys.executable, "-c", "import triton_kernels"],
        capture_output=True,
        cwd="/",
        check=False,
        timeout=60,
    )
    assert done.returncode != 0
