"""Cold and warm load time of each packaged model.

    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_models.py

Cold: a fresh process with an empty ctxzip cache (SmolLM2 is converted from its GGUF).
Warm: a fresh process with the converted cache in place. Each load ends with a forward pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

LOADS = {
    "all-MiniLM-L6-v2": (
        "from ctxzip.models import load_sentence_transformer as L;"
        "L('sentence-transformers/all-MiniLM-L6-v2', device='cpu').encode(['hello'])"
    ),
    "SmolLM2-135M-Instruct": (
        "import torch; from ctxzip.models import load_causal_lm as L;"
        "m, t = L('HuggingFaceTB/SmolLM2-135M-Instruct', device='cpu');"
        "m(**t('hello', return_tensors='pt'))"
    ),
}


def timed_process(code: str, cache: str) -> float:
    env = {**os.environ, "CTXZIP_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1"}
    probe = f"import time; s = time.perf_counter(); {code}; print(time.perf_counter() - s)"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, check=True)
    return float(out.stdout.decode().strip().splitlines()[-1])


def main() -> None:
    print(f"{'model':<24} {'cold s':>8} {'warm s':>8} {'cold/warm':>10}")
    for name, code in LOADS.items():
        with tempfile.TemporaryDirectory() as cache:
            cold = timed_process(code, cache)
            warm = min(timed_process(code, cache) for _ in range(2))
        print(f"{name:<24} {cold:>8.2f} {warm:>8.2f} {cold / warm:>10.1f}")


if __name__ == "__main__":
    main()
