import pytest
import torch
from _helpers import assert_tensors_close


def test_equal_tensors_pass():
    x = torch.randn(5, 7)
    assert_tensors_close(x, x.clone())


def test_report_names_count_and_worst_index():
    expected = torch.zeros(3, 4)
    actual = expected.clone()
    actual[1, 2] = 1.0
    actual[2, 3] = 0.5
    with pytest.raises(AssertionError, match=r"2 of 12 elements differ.*worst at \(1, 2\)"):
        assert_tensors_close(actual, expected)


def test_nan_on_one_side_fails():
    expected = torch.ones(4)
    actual = expected.clone()
    actual[0] = float("nan")
    with pytest.raises(AssertionError, match="NaN/inf on one side only: 1"):
        assert_tensors_close(actual, expected)


def test_matching_infinities_pass_and_shape_mismatch_fails():
    x = torch.tensor([1.0, float("inf"), float("nan")])
    assert_tensors_close(x, x.clone())
    with pytest.raises(AssertionError, match="shape"):
        assert_tensors_close(torch.zeros(2), torch.zeros(3))


def test_dtype_default_tolerance_applies():
    ref = torch.tensor([1.0])
    assert_tensors_close(torch.tensor([1.004], dtype=torch.bfloat16), ref)
    with pytest.raises(AssertionError):
        assert_tensors_close(torch.tensor([1.004], dtype=torch.float32), ref)
