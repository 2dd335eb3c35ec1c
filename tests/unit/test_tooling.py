"""The repository's own rules: lint clean, formatted, and the README's commands stay true."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(args):
    beside_python = Path(sys.executable).with_name("ruff")
    ruff = str(beside_python) if beside_python.exists() else shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it is in the 'test' extra)")
    done = subprocess.run([ruff, *args, "."], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- test-command -->\s*```bash\n(.+?)\n```", readme, re.S)
    assert block is not None, "README.md lost its <!-- test-command --> block"
    command = block.group(1)
    assert "pytest" in command
    assert "torch==2.13.0" in command
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci


def test_readme_usage_example_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Usage\s*```python\n(.+?)\n```", readme, re.S)
    assert block is not None, "README.md lost its usage example"
    env = {"PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "0"}
    done = subprocess.run(
        [sys.executable, "-c", block.group(1)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # With the interpreter off and no GPU, the policy sends both fused ops to stock torch.
    assert done.stdout.split() == ["torch", "torch"]


def test_swap_example_trains_and_reports_backends():
    env = {"PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "0"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "swap_into_training_loop.py"), "--epochs", "1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    accuracy = re.search(r"test accuracy ([\d.]+)%", done.stdout)
    assert accuracy is not None, done.stdout
    assert float(accuracy.group(1)) > 30.0  # 10 classes: chance is 10%
    assert "FusedAdam ran on: torch" in done.stdout
