import math

import pytest

from ctxzip import Budget


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.01, 2, math.nan, True, "0.5", None])
def test_invalid_rate(rate):
    with pytest.raises(ValueError, match=r"rate|exactly one"):
        Budget(rate=rate)


@pytest.mark.parametrize("target", [0, -5, 1.5, "10", False])
def test_invalid_target_tokens(target):
    with pytest.raises(ValueError, match="target_tokens"):
        Budget(target_tokens=target)


def test_exactly_one():
    with pytest.raises(ValueError, match="exactly one"):
        Budget()
    with pytest.raises(ValueError, match="exactly one"):
        Budget(rate=0.5, target_tokens=10)


def test_tokens_for():
    assert Budget(rate=1.0).tokens_for(137) == 137
    assert Budget(rate=0.3).tokens_for(100) == 30  # no float drift below 30
    assert Budget(rate=0.5).tokens_for(7) == 3  # never above the budget
    assert Budget(target_tokens=50).tokens_for(20) == 20
    assert Budget(target_tokens=50).tokens_for(200) == 50
    assert Budget(target_tokens=50).requested_rate(200) == 0.25
    assert Budget(rate=0.2).requested_rate(0) == 1.0
    assert str(Budget(rate=0.25)) == "rate=0.25"
