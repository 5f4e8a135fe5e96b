"""Token counting speed: ctxzip.count_tokens against plain tiktoken, in the same run.

    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_tokens.py

Prints milliseconds for a ~100k-token text (CPython's language reference, offline)
and the ratio baseline / ctxzip (above 1.0 means ctxzip is faster).
"""

from __future__ import annotations

import pydoc_data.topics
import statistics
import time

from ctxzip.tokens import get_tokenizer


def median_ms(fn, repeats: int = 9) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    text = " ".join(pydoc_data.topics.topics.values())[:470_000]
    print(f"{'model':<16} {'tokens':>8} {'tiktoken ms':>12} {'ctxzip ms':>10} {'ratio':>6}")
    for model in ("gpt-4o", "gpt-4"):
        tok = get_tokenizer(model)
        enc = tok._enc  # the tiktoken Encoding itself: the baseline
        n = tok.count(text)
        assert n == len(enc.encode(text, disallowed_special=()))
        base = median_ms(lambda enc=enc: enc.encode(text, disallowed_special=()))
        ours = median_ms(lambda tok=tok: tok.count(text))
        print(f"{model:<16} {n:>8} {base:>12.1f} {ours:>10.1f} {base / ours:>6.2f}")


if __name__ == "__main__":
    main()
