"""The demo (``python -m torchkit.demo``): a short real run, its outputs, and its data loaders.

The runs pin ``--backend torch`` (the suite sets ``TRITON_INTERPRET=1``, under which the fused
ops would run Triton's interpreter, far too slowly for a training run) and ``--threads 1``
(pytest-xdist workers share the cores). Everything is seeded, so the thresholds below are
checked against the same numbers on every run.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torchkit.demo import main
from torchkit.demo.data import (
    IDX_FILES,
    find_idx_files,
    load_digits_32,
    load_idx_dataset,
    read_idx,
)
from torchkit.demo.report import PLOT_FILES
from torchkit.demo.train import RUNS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = ["--backend", "torch", "--threads", "1", "--no-progress"]


def _chance_bound(n_test: int, classes: int = 10) -> float:
    """Accuracy that guessing reaches with probability < 1e-4: chance plus four binomial sigmas."""
    p = 1.0 / classes
    return p + 4.0 * math.sqrt(p * (1.0 - p) / n_test)


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def _without_timings(metrics: dict) -> list[dict]:
    return [{k: v for k, v in run.items() if k != "epoch_seconds"} for run in metrics["runs"]]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One full epoch of every run on the bundled digits; returns (out dir, stdout)."""
    out = tmp_path_factory.mktemp("demo")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["--epochs", "1", "--seed", "0", "--out", str(out), *FAST])
    assert status == 0
    return out, stdout.getvalue()


def test_smoke_run_writes_every_output(smoke_run: tuple[Path, str]) -> None:
    out, _ = smoke_run
    for name in PLOT_FILES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), f"{name} is not a PNG"
        # IHDR: width and height as big-endian uint32 at bytes 16..24.
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 600, f"{name} is {width} pixels wide"
        assert height >= 300, f"{name} is {height} pixels high"
    assert (out / "summary.md").is_file()
    assert (out / "metrics.json").is_file()


def test_smoke_run_beats_chance_in_every_run(smoke_run: tuple[Path, str]) -> None:
    out, _ = smoke_run
    metrics = _metrics(out)
    n_test = metrics["info"]["test_size"]
    assert n_test == 360
    bound = _chance_bound(n_test)
    assert [run["key"] for run in metrics["runs"]] == [spec.key for spec in RUNS]
    for run in metrics["runs"]:
        assert len(run["test_acc"]) == 1
        assert run["test_acc"][0] > bound, (
            f"{run['label']}: {run['test_acc'][0]:.3f} <= {bound:.3f}"
        )
        assert math.isfinite(run["train_loss"][0])
        assert math.isfinite(run["test_loss"][0])


def test_summary_has_one_row_per_run_with_its_numbers(smoke_run: tuple[Path, str]) -> None:
    out, stdout = smoke_run
    summary = (out / "summary.md").read_text(encoding="utf-8")
    runs = _metrics(out)["runs"]
    rows = [line for line in summary.splitlines() if line.startswith("| ")][1:]  # no header
    assert rows[0].startswith("| --- |")
    rows = rows[1:]
    assert len(rows) == len(RUNS)
    for row, run in zip(rows, runs, strict=True):
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert cells[0] == run["label"]
        assert cells[1] == f"{run['test_acc'][-1]:.2%}"
        assert float(cells[5]) == pytest.approx(run["epoch_seconds"][0], abs=0.006)
        assert "FusedConv2dReLU: torch" in cells[-1]
        if "FusedAdam" in run["label"]:
            assert "FusedAdam: torch" in cells[-1]
        assert run["label"] in stdout
    for name in PLOT_FILES:
        assert f"]({name})" in summary
    assert "2 Conv2d+ReLU pairs (`body.0`, `body.3`)" in summary
    assert "pinned to `torch`" in summary


def test_lrs_follow_the_schedules(smoke_run: tuple[Path, str]) -> None:
    out, _ = smoke_run
    runs = {run["key"]: run for run in _metrics(out)["runs"]}
    steps = math.ceil(1437 / 64)
    assert all(len(run["lrs"]) == steps for run in runs.values())
    assert runs["adam"]["lrs"] == [1e-3] * steps
    # StepLR steps per epoch: constant within the one epoch.
    assert runs["sgd-steplr"]["lrs"] == [0.02] * steps
    # The warmup schedules rise before they fall.
    for key in ("fusedadam-warmup-cosine", "fusedadam-noam", "sgd-onecycle-exp"):
        lrs = runs[key]["lrs"]
        peak = lrs.index(max(lrs))
        assert 0 < peak < steps - 1, key
    # OneCycle chained with ExponentialLR(0.5 ** (1 / steps)): torch's OneCycleLR times gamma**t.
    reference_param = torch.zeros(1, requires_grad=True)
    reference_opt = torch.optim.SGD([reference_param], lr=0.05, momentum=0.9)
    reference = torch.optim.lr_scheduler.OneCycleLR(reference_opt, max_lr=0.05, total_steps=steps)
    gamma = 0.5 ** (1.0 / steps)
    expected = []
    for t in range(steps):
        expected.append(reference_opt.param_groups[0]["lr"] * gamma**t)
        reference_opt.step()
        reference.step()
    torch.testing.assert_close(
        torch.tensor(runs["sgd-onecycle-exp"]["lrs"], dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
    )


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path: Path) -> None:
    def run(seed: int, name: str) -> list[dict]:
        out = tmp_path / name
        args = ["--epochs", "1", "--max-batches", "3", "--seed", str(seed), "--out", str(out)]
        assert main([*args, *FAST]) == 0
        return _without_timings(_metrics(out))

    first, again, other = run(0, "a"), run(0, "b"), run(1, "c")
    assert first == again
    assert first != other
    assert all(len(r["lrs"]) == 3 for r in first)


def test_main_leaves_torch_threads_and_global_rng_alone(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    other = 1 if threads != 1 else 2  # a count main() must set and then undo
    args = ["--epochs", "1", "--max-batches", "1", "--out", str(tmp_path)]
    assert main([*args, "--backend", "torch", "--threads", str(other), "--no-progress"]) == 0
    assert torch.get_num_threads() == threads
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--epochs", "0"], "expected a positive integer, got 0", id="epochs-0"),
        pytest.param(["--epochs", "x"], "expected a positive integer, got 'x'", id="epochs-text"),
        pytest.param(["--max-batches", "-1"], "got -1", id="max-batches-negative"),
        pytest.param(["--data", "/nonexistent/idx"], "is not a folder", id="data-missing"),
        pytest.param(["--device", "nonsense"], "not a torch device", id="device-unknown"),
        pytest.param(["--backend", "cuda"], "invalid choice", id="backend-unknown"),
    ],
)
def test_bad_arguments_exit_with_usage_error(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(tmp_path), *FAST])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a CUDA device")
def test_cuda_device_without_cuda_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["--device", "cuda", "--out", str(tmp_path), *FAST])
    assert "torch sees no CUDA device" in capsys.readouterr().err


# ---------------------------------------------------------------- data


def test_digits_are_upsampled_and_standardised_with_training_statistics() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits_32()
    assert data.train.images.shape == (1437, 1, 32, 32)
    assert data.test.images.shape == (360, 1, 32, 32)
    assert data.train.images.dtype == torch.float32
    assert data.train.labels.dtype == torch.int64
    # Reference: the same fixed stratified split, then Resize((32, 32)) and Normalize written
    # out in torch with the training split's statistics.
    digits = load_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        digits.images / 16.0, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    train_x, test_x = torch.from_numpy(train_x), torch.from_numpy(test_x)
    assert data.mean == pytest.approx(float(train_x.mean()), rel=1e-12)
    assert data.std == pytest.approx(float(train_x.std()), rel=1e-12)
    expected = F.interpolate(test_x.float().unsqueeze(1), size=(32, 32), mode="bilinear")
    torch.testing.assert_close(data.test.images, (expected - data.mean) / data.std)
    torch.testing.assert_close(data.test.labels, torch.from_numpy(test_y).long())
    torch.testing.assert_close(data.train.labels, torch.from_numpy(train_y).long())
    assert torch.bincount(data.test.labels).tolist() == np.bincount(test_y).tolist()


def _idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        struct.pack(">I", size) for size in array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


IDX_CASES = [
    pytest.param(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), 0x08, id="ubyte-3d"),
    pytest.param(np.array([-3, 0, 7], dtype=np.int8), 0x09, id="sbyte-1d"),
    pytest.param(np.array([[1, -2], [300, -400]], dtype=np.int16), 0x0B, id="short-2d"),
    pytest.param(np.array([70000, -1], dtype=np.int32), 0x0C, id="int-1d"),
    pytest.param(np.array([[0.5, -1.25]], dtype=np.float32), 0x0D, id="float-2d"),
    pytest.param(np.array([1e-300, 2.5], dtype=np.float64), 0x0E, id="double-1d"),
]


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize(("array", "type_code"), IDX_CASES)
def test_read_idx_round_trips(
    array: np.ndarray, type_code: int, compressed: bool, tmp_path: Path
) -> None:
    payload = _idx_bytes(array, type_code)
    path = tmp_path / "file-idx"
    path.write_bytes(gzip.compress(payload) if compressed else payload)
    result = read_idx(path)
    assert result.shape == array.shape
    assert result.dtype == array.dtype  # native byte order
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(b"\x1f\x00\x08\x01" + b"\0" * 8, "not an IDX file", id="bad-magic"),
        pytest.param(b"", "not an IDX file", id="empty"),
        pytest.param(
            bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]), "unknown IDX type code 0x07", id="type"
        ),
        pytest.param(bytes([0, 0, 0x08, 2, 0, 0, 0, 2]), "truncated IDX header", id="header"),
        pytest.param(bytes([0, 0, 0x08, 1, 0, 0, 0, 4, 1, 2, 3]), "holds 3", id="short-payload"),
    ],
)
def test_read_idx_rejects_malformed_files(payload: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=message):
        read_idx(path)


def _write_idx_set(
    folder: Path, rng: np.random.Generator, *, n_train: int, n_test: int, gz: bool
) -> dict[str, np.ndarray]:
    """Four small IDX files (random pixels: a stand-in for the files' format, not for data)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for role, array in arrays.items():
        payload = _idx_bytes(array, 0x08)
        name = IDX_FILES[role] + (".gz" if gz else "")
        (folder / name).write_bytes(gzip.compress(payload) if gz else payload)
    return arrays


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_dataset_in_torchvision_layout(gz: bool, tmp_path: Path) -> None:
    arrays = _write_idx_set(
        tmp_path / "FashionMNIST" / "raw", np.random.default_rng(0), n_train=12, n_test=5, gz=gz
    )
    for root in (tmp_path, tmp_path / "FashionMNIST", tmp_path / "FashionMNIST" / "raw"):
        assert find_idx_files(root)["train_images"].parent == tmp_path / "FashionMNIST" / "raw"
    data = load_idx_dataset(tmp_path)
    assert data.name == "FashionMNIST"
    assert (len(data.train), len(data.test)) == (12, 5)
    pixels = torch.from_numpy(arrays["train_images"]).double() / 255.0
    # The demo divides in float32, as ToTensor does: each pixel carries a relative rounding
    # error of at most 2**-24 (6e-8), and so do its mean and std.
    assert data.mean == pytest.approx(float(pixels.mean()), rel=1e-7)
    assert data.std == pytest.approx(float(pixels.std()), rel=1e-7)
    # Reference: transforms.Resize((32, 32)) then Normalize(mean, std), written out in torch.
    test = torch.from_numpy(arrays["test_images"]).float().unsqueeze(1) / 255.0
    expected = (F.interpolate(test, size=(32, 32), mode="bilinear") - data.mean) / data.std
    torch.testing.assert_close(data.test.images, expected)
    torch.testing.assert_close(data.test.labels, torch.from_numpy(arrays["test_labels"]).long())


def test_find_idx_files_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no MNIST-style IDX files"):
        find_idx_files(tmp_path)
    rng = np.random.default_rng(1)
    _write_idx_set(tmp_path / "MNIST" / "raw", rng, n_train=2, n_test=2, gz=True)
    _write_idx_set(tmp_path / "FashionMNIST" / "raw", rng, n_train=2, n_test=2, gz=False)
    with pytest.raises(ValueError, match="several IDX datasets"):
        find_idx_files(tmp_path)
    assert find_idx_files(tmp_path / "MNIST")["test_labels"].name == "t10k-labels-idx1-ubyte.gz"


def test_idx_labels_outside_ten_classes_are_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    _write_idx_set(folder, np.random.default_rng(2), n_train=3, n_test=2, gz=False)
    labels = np.array([0, 10, 3], dtype=np.uint8)
    (folder / IDX_FILES["train_labels"]).write_bytes(_idx_bytes(labels, 0x08))
    with pytest.raises(ValueError, match=r"labels span 0\.\.10"):
        load_idx_dataset(tmp_path)


def test_demo_trains_on_idx_files(tmp_path: Path) -> None:
    _write_idx_set(
        tmp_path / "data" / "MNIST" / "raw",
        np.random.default_rng(3),
        n_train=40,
        n_test=10,
        gz=True,
    )
    out = tmp_path / "out"
    args = ["--data", str(tmp_path / "data"), "--epochs", "1", "--max-batches", "1"]
    assert main([*args, "--batch-size", "8", "--out", str(out), *FAST]) == 0
    metrics = _metrics(out)
    assert metrics["info"]["dataset"] == "MNIST"
    assert (metrics["info"]["train_size"], metrics["info"]["test_size"]) == (40, 10)
    assert all(len(run["lrs"]) == 1 for run in metrics["runs"])
    assert "LeNet on MNIST" in (out / "summary.md").read_text(encoding="utf-8")


@pytest.mark.interpreter
def test_one_step_on_the_triton_interpreter_matches_the_stock_path() -> None:
    """The fused ops' Triton kernels (interpreted) give the demo the numbers stock torch gives."""
    from torchkit import Backend, force_backend, select_backend
    from torchkit.demo.data import Split
    from torchkit.demo.model import LeNet
    from torchkit.demo.train import train_run
    from torchkit.nn import fuse_conv_relu

    if select_backend("cpu") is not Backend.TRITON_INTERPRETER:
        pytest.skip("needs triton and TRITON_INTERPRET=1 (set by tests/conftest.py)")
    generator = torch.Generator().manual_seed(0)
    train = Split(torch.randn(4, 1, 32, 32, generator=generator), torch.tensor([0, 1, 2, 3]))
    test = Split(torch.randn(3, 1, 32, 32, generator=generator), torch.tensor([4, 5, 6]))
    torch.manual_seed(0)
    model = fuse_conv_relu(LeNet())
    spec = next(spec for spec in RUNS if spec.key == "fusedadam-noam")
    kwargs = {"epochs": 1, "batch_size": 4, "seed": 0, "progress": False, "log": lambda _: None}

    interpreted = train_run(spec, model, train, test, **kwargs)
    with force_backend("torch"):
        stock = train_run(spec, model, train, test, **kwargs)

    assert interpreted.backends == {
        "FusedConv2dReLU": "triton-interpreter",
        "FusedAdam": "triton-interpreter",
    }
    assert stock.backends == {"FusedConv2dReLU": "torch", "FusedAdam": "torch"}
    assert interpreted.lrs == stock.lrs
    # Same data, weights and batches: only the kernels differ, so the losses agree to fp32.
    torch.testing.assert_close(
        torch.tensor(interpreted.test_loss + interpreted.train_loss),
        torch.tensor(stock.test_loss + stock.train_loss),
    )
