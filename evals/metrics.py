"""Answer metrics (SQuAD-style), latency percentiles, bootstrap intervals, length buckets.

Definitions follow the SQuAD v1.1 evaluation script as FlashRAG and KILT use it:
normalise (lower case, drop punctuation, drop the articles a/an/the, collapse
whitespace), then take the best score over all gold answers.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
_YES_NO = {"yes", "no", "noanswer"}


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower, strip punctuation, remove articles, collapse spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    # HotpotQA convention (as in FlashRAG): yes/no/noanswer must match exactly
    if (pred in _YES_NO or ref in _YES_NO) and pred != ref:
        return 0.0
    pred_toks, ref_toks = pred.split(), ref.split()
    common = Counter(pred_toks) & Counter(ref_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(ref_toks)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Token-level F1 of the normalised texts, best over gold answers."""
    return max((_f1(prediction, g) for g in golds), default=0.0)


def accuracy(prediction: str, golds: Sequence[str]) -> float:
    """FlashRAG's `acc` (sub-exact match): a normalised gold answer occurs in the prediction."""
    pred = normalize_answer(prediction)
    return float(any(_contains(pred, normalize_answer(g)) for g in golds))


def answer_retained(context: str, golds: Sequence[str]) -> float:
    """1.0 when a gold answer still occurs in the (compressed) context; reader-independent."""
    return accuracy(context, golds)


def _contains(haystack: str, needle: str) -> bool:
    """Whole-token containment, so gold '3' is not found inside '13'."""
    if not needle:
        return False
    return f" {needle} " in f" {haystack} "


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default); nan for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean (seeded, so reruns agree)."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan)
    if n == 1:
        return (float(values[0]), float(values[0]))
    import numpy as np

    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    means = data[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return (float(lo), float(hi))


DEFAULT_BUCKETS = (500, 1000, 2000, 4000, 8000)
"""Upper edges (tokens of full context) of the length buckets; the last bucket is open."""


def length_bucket(tokens: int, edges: Sequence[int] = DEFAULT_BUCKETS) -> str:
    """A LongBench-style label such as '0-500' or '8000+' for a context length."""
    lower = 0
    for edge in edges:
        if tokens < edge:
            return f"{lower}-{edge}"
        lower = edge
    return f"{lower}+"
