"""Exact token counts in the tokenizer of the model that will read the text.

OpenAI encodings come from tiktoken. tiktoken downloads its BPE files on first use,
which fails offline, so we seed tiktoken's own cache from the copies that the
`bpe-openai` package ships (tiktoken still checks their SHA-256). Counting, the hot
path, goes through `bpe-openai`'s Rust counter, which gives the same numbers without
building the token list and is about twice as fast as tiktoken on cl100k. Hugging Face
ids and local folders use the model's own fast tokenizer.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from importlib import resources
from typing import Any, Protocol

from ctxzip.errors import ModelNotFoundError

DEFAULT_TOKENIZER = "gpt-4o"

# Where tiktoken looks for each file, and the SHA-256 it expects (tiktoken_ext.openai_public).
_TIKTOKEN_FILES = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}

# Longest prefix wins. Claude has no public tokenizer: o200k_base is the closest stand-in.
_MODEL_PREFIXES = {
    "gpt-4o": "o200k_base",
    "chatgpt-4o": "o200k_base",
    "gpt-4.1": "o200k_base",
    "gpt-4.5": "o200k_base",
    "gpt-5": "o200k_base",
    "gpt-oss": "o200k_base",
    "o1": "o200k_base",
    "o3": "o200k_base",
    "o4": "o200k_base",
    "gpt-4": "cl100k_base",
    "gpt-3.5": "cl100k_base",
    "gpt-35": "cl100k_base",
    "text-embedding-3": "cl100k_base",
    "text-embedding-ada-002": "cl100k_base",
    "claude": "o200k_base",
}


class Tokenizer(Protocol):
    """The little a compressor needs from a tokenizer."""

    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def count(self, text: str) -> int: ...

    def token_starts(self, text: str) -> list[int]:
        """Character offset where each token of `text` starts (for cutting at token edges)."""
        ...


class TiktokenTokenizer:
    def __init__(self, encoding_name: str, label: str | None = None) -> None:
        import tiktoken

        _seed_tiktoken_cache(encoding_name)
        self._enc = tiktoken.get_encoding(encoding_name)
        self._counter = _bpe_counter(encoding_name)
        self.name = label or encoding_name

    def encode(self, text: str) -> list[int]:
        # Special-token text in user content is content, never a control token.
        return self._enc.encode(text, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(ids)

    def token_starts(self, text: str) -> list[int]:
        # a token that starts inside a multi-byte character maps to that character
        return list(self._enc.decode_with_offsets(self.encode(text))[1])

    def count(self, text: str) -> int:
        if len(text) < _PARALLEL_CHARS or _THREADS == 1:
            return self._count_piece(text)
        # Both counters release the GIL, so long texts are counted on every core.
        return sum(_counting_pool().map(self._count_piece, _split_for_counting(text, _THREADS)))

    def _count_piece(self, text: str) -> int:
        if self._counter is not None:
            return int(self._counter.count(text))
        return len(self._enc.encode_ordinary(text))


def _bpe_counter(encoding_name: str) -> Any:
    """bpe-openai's native counter for `encoding_name`, or None to count with tiktoken."""
    try:
        from bpe_openai import _bindings
    except ImportError:
        return None
    if encoding_name not in _bindings.supported_encodings():
        return None
    return _bindings.tokenizer_for_encoding(encoding_name)


class HFTokenizer:
    def __init__(self, model_id: str) -> None:
        from ctxzip.models import load_tokenizer

        self._tok = load_tokenizer(model_id)
        backend = getattr(self._tok, "backend_tokenizer", None)
        self._fast = None
        if backend is not None:  # a private copy: no padding, no truncation, no warnings
            from tokenizers import Tokenizer as RustTokenizer

            self._fast = RustTokenizer.from_str(backend.to_str())
            self._fast.no_padding()
            self._fast.no_truncation()
        self.name = model_id

    def encode(self, text: str) -> list[int]:
        if self._fast is not None:  # no max-length warnings, no special tokens
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids))

    def token_starts(self, text: str) -> list[int]:
        if self._fast is not None:
            return [start for start, _ in self._fast.encode(text, add_special_tokens=False).offsets]
        encoded = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return [start for start, _ in encoded["offset_mapping"]]

    def count(self, text: str) -> int:
        return len(self.encode(text))


_PARALLEL_CHARS = 64_000
_THREADS = max(1, min(8, os.cpu_count() or 1))
# Between a letter and " letter" both OpenAI pre-tokenisers always end one piece and
# start the next, so cutting there and summing the counts is exact.
_SAFE_CUT = re.compile(r"(?<=[A-Za-z]) (?=[A-Za-z])")


@lru_cache(maxsize=1)
def _counting_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(_THREADS, thread_name_prefix="ctxzip-count")


def _split_for_counting(text: str, parts: int) -> list[str]:
    cuts = [0]
    for i in range(1, parts):
        m = _SAFE_CUT.search(text, max(cuts[-1] + 1, len(text) * i // parts))
        if m is None:
            break
        cuts.append(m.start())
    cuts.append(len(text))
    return [text[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def encoding_for_model(model: str) -> str | None:
    """The tiktoken encoding an OpenAI model (or encoding name) uses, else None."""
    if model in _TIKTOKEN_FILES:
        return model
    name = model.split("/")[-1].lower()  # "openai/gpt-4o" works too
    best = max((p for p in _MODEL_PREFIXES if name.startswith(p)), key=len, default=None)
    return _MODEL_PREFIXES[best] if best else None


_lock = threading.Lock()


@lru_cache(maxsize=32)
def _tokenizer_cached(model: str) -> Tokenizer:
    encoding = encoding_for_model(model)
    if encoding is not None:
        label = encoding if model == encoding else f"{encoding} ({model})"
        return TiktokenTokenizer(encoding, label)
    try:
        return HFTokenizer(model)
    except ModelNotFoundError:
        raise
    except Exception as exc:  # transformers raises many kinds for a bad id
        raise ModelNotFoundError(
            f"no tokenizer for {model!r}: not an OpenAI model name and not a loadable "
            f"Hugging Face tokenizer ({exc.__class__.__name__})"
        ) from exc


def get_tokenizer(model: str = DEFAULT_TOKENIZER) -> Tokenizer:
    """A cached tokenizer for an OpenAI model name, encoding name, HF id or local folder."""
    with _lock:
        return _tokenizer_cached(model)


def count_tokens(text: str, model: str = DEFAULT_TOKENIZER) -> int:
    """Tokens `text` costs when `model` reads it."""
    return get_tokenizer(model).count(text)


def _tiktoken_cache_dir() -> str:
    # The same lookup order tiktoken.load.read_file_cached uses.
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _seed_tiktoken_cache(encoding_name: str) -> None:
    if encoding_name not in _TIKTOKEN_FILES:
        return  # not one we ship; tiktoken may still have it cached
    url, sha256 = _TIKTOKEN_FILES[encoding_name]
    cache_dir = _tiktoken_cache_dir()
    if not cache_dir:  # caching disabled by the user: tiktoken will download
        return
    path = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
    if os.path.exists(path):
        return
    try:
        packaged = resources.files("bpe_openai").joinpath("data", f"{encoding_name}.tiktoken.gz")
        data = gzip.decompress(packaged.read_bytes())
    except (ModuleNotFoundError, FileNotFoundError):
        return  # let tiktoken try the network and report its own error
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ModelNotFoundError(
            f"packaged {encoding_name} file does not match tiktoken's checksum"
        )
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
