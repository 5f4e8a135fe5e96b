"""Metric functions against worked SQuAD-style examples."""

from __future__ import annotations

import math

import pytest

from ctxzip.evals import metrics
from ctxzip.evals.plot import pareto_front


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Cat!", "cat"),
        ("  a  quick,   brown fox. ", "quick brown fox"),
        ("An apple and THE pear", "apple and pear"),
        ("theatre", "theatre"),  # articles only as whole words
        ("__bool__()", "bool"),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert metrics.normalize_answer(text) == expected


def test_exact_match_takes_best_gold() -> None:
    assert metrics.exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert metrics.exact_match("Eiffel", ["Eiffel Tower", "Tour Eiffel"]) == 0.0
    assert metrics.exact_match("tour eiffel", ["Eiffel Tower", "Tour Eiffel"]) == 1.0


def test_f1_worked_example() -> None:
    # pred -> [cat, sat, on, mat]; gold -> [cat, on, mat]: P = 3/4, R = 1, F1 = 6/7
    assert metrics.f1_score("the cat sat on the mat", ["cat on mat"]) == pytest.approx(6 / 7)
    # SQuAD v1.1 example: pred "Denver Broncos", gold "Broncos" -> P=1/2, R=1 -> 2/3
    assert metrics.f1_score("Denver Broncos", ["Broncos"]) == pytest.approx(2 / 3)
    assert metrics.f1_score("Denver Broncos", ["Broncos", "Denver Broncos"]) == 1.0
    assert metrics.f1_score("nothing shared", ["Broncos"]) == 0.0
    assert metrics.f1_score("", ["Broncos"]) == 0.0


def test_f1_counts_repeated_tokens_once_each() -> None:
    # pred [new, new, york]; gold [new, york]: common = {new:1, york:1} -> P=2/3, R=1
    assert metrics.f1_score("new new york", ["New York"]) == pytest.approx(0.8)


def test_yes_no_must_match_exactly() -> None:
    assert metrics.f1_score("yes it is", ["no"]) == 0.0
    assert metrics.f1_score("no", ["no"]) == 1.0
    assert metrics.f1_score("yes", ["no it is not"]) == 0.0


def test_accuracy_is_gold_inside_prediction() -> None:
    assert metrics.accuracy("It was founded in 1874 by Elsa.", ["1874"]) == 1.0
    assert metrics.accuracy("It was founded in 18740.", ["1874"]) == 0.0  # whole tokens
    assert metrics.accuracy("The answer is ZeroDivisionError", ["ZeroDivisionError"]) == 1.0
    assert metrics.accuracy("", ["x"]) == 0.0


def test_answer_retained_reads_the_context() -> None:
    ctx = 'Division by zero raises the "ZeroDivisionError" exception.'
    assert metrics.answer_retained(ctx, ["ZeroDivisionError"]) == 1.0
    assert metrics.answer_retained("Division by zero raises.", ["ZeroDivisionError"]) == 0.0


def test_percentile_matches_linear_interpolation() -> None:
    xs = [1.0, 2.0, 3.0, 4.0]
    assert metrics.percentile(xs, 50) == 2.5
    assert metrics.percentile(xs, 95) == pytest.approx(3.85)
    assert math.isnan(metrics.percentile([], 50))


def test_bootstrap_ci_brackets_the_mean_and_is_seeded() -> None:
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = metrics.bootstrap_ci(values, seed=1)
    assert lo < 0.3 < hi
    assert lo > 0.18 and hi < 0.42  # about ±1.96 * sqrt(.21/100) = ±0.09
    assert metrics.bootstrap_ci(values, seed=1) == (lo, hi)
    assert metrics.bootstrap_ci([1.0, 1.0, 1.0]) == (1.0, 1.0)


def test_length_buckets() -> None:
    assert metrics.length_bucket(10) == "0-500"
    assert metrics.length_bucket(500) == "500-1000"
    assert metrics.length_bucket(9000) == "8000+"
    assert metrics.length_bucket(5000, [4000, 8000]) == "4000-8000"


def test_pareto_front() -> None:
    # (kept fraction, F1): lower x and higher y are better
    points = [(1.0, 0.8), (0.5, 0.7), (0.5, 0.6), (0.2, 0.7), (0.1, 0.2)]
    assert sorted(pareto_front(points)) == [0, 3, 4]
