"""The LiteLLM proxy's own virtual environment, with ctxzip installed into it (idempotent).

LiteLLM's proxy extra pins versions that clash with the project's stack (it would
downgrade huggingface_hub below what transformers 5 needs, and rich, websockets...), so
it lives in ``build/litellm-venv``: `litellm[proxy]`, the few packages ctxzip's plugin
path imports (no torch, no transformers), and ctxzip itself (editable, no dependencies).
A stamp holds a hash of what was installed; a second run with the same inputs does
nothing. ``python tests/litellm_venv.py`` (or ``make litellm-venv``) builds it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "build" / "litellm-venv"
STAMP = VENV / ".ctxzip-litellm"
PACKAGES = [
    "litellm[proxy]>=1.80",
    # what `ctxzip.middleware.litellm` imports through ctxzip's core and the content family
    "numpy>=1.26", "click>=8.1", "tiktoken>=0.8", "bpe-openai>=0.1.4,<0.2", "regex>=2023.0",
    "httpx>=0.27", "setuptools>=69",
]  # fmt: skip


def python() -> Path:
    return VENV / "bin" / "python"


def _wanted() -> str:
    h = hashlib.sha256("\n".join(PACKAGES).encode())
    h.update((ROOT / "pyproject.toml").read_bytes())
    return h.hexdigest()


def ready() -> bool:
    return python().exists() and STAMP.exists() and STAMP.read_text() == _wanted()


def build(quiet: bool = True) -> Path:
    """Create (or bring up to date) the environment; return its Python."""
    if ready():
        return python()
    if not python().exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    q = ["--quiet"] if quiet else []
    pip = [str(python()), "-m", "pip", "install", *q, "--disable-pip-version-check"]
    subprocess.run([*pip, *PACKAGES], check=True)
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", "-e", str(ROOT)], check=True)
    STAMP.write_text(_wanted())
    return python()


if __name__ == "__main__":
    print(build(quiet="-v" not in sys.argv))
