"""Real training and calibration text that needs no download: Python's own reference and docstrings.

Two cuts of it, for the two kinds of consumer:
- `reference_passages` cuts ``pydoc_data.topics`` (the language reference behind ``help()``)
  and the docstrings of routines, classes and properties of `MODULES` into passages of
  about 60-180 tokens of a given counter (xrag training: its QA set is built from these).
  Plain-value attributes are skipped: ``inspect.getdoc`` would hand them their type's
  docstring (junk repeated hundreds of times). `Passage.heldout` splits by a hash of the
  text, so the split is stable across runs.
- `docstring_passages` packs whole docstring paragraphs of `DOCSTRING_MODULES` into
  passages of 40-160 words (token classification: its teacher labels and its int8
  calibration), and never reads ``pydoc_data``, which the `pyref` QA set is built from.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ctxzip.errors import InputError

MODULES = [
    "builtins",
    "os",
    "os.path",
    "re",
    "json",
    "collections",
    "itertools",
    "functools",
    "string",
    "textwrap",
    "datetime",
    "math",
    "statistics",
    "random",
    "pathlib",
    "shutil",
    "subprocess",
    "threading",
    "queue",
    "asyncio",
    "socket",
    "http.client",
    "urllib.parse",
    "urllib.request",
    "email.message",
    "csv",
    "sqlite3",
    "logging",
    "argparse",
    "typing",
    "dataclasses",
    "enum",
    "inspect",
    "io",
    "zipfile",
    "tarfile",
    "gzip",
    "hashlib",
    "hmac",
    "base64",
    "struct",
    "heapq",
    "bisect",
    "copy",
    "tempfile",
    "glob",
    "fnmatch",
    "time",
    "calendar",
    "decimal",
    "fractions",
    "difflib",
    "unittest",
    "doctest",
    "contextlib",
    "abc",
    "operator",
    "types",
    "weakref",
    "xml.etree.ElementTree",
    "html",
    "uuid",
    "ipaddress",
    "secrets",
    "pprint",
    "traceback",
    "warnings",
    "codecs",
    "locale",
    "configparser",
    "platform",
    "array",
    "binascii",
    "cmath",
    "concurrent.futures",
    "ctypes",
    "dis",
    "filecmp",
    "getopt",
    "gettext",
    "graphlib",
    "imaplib",
    "importlib",
    "keyword",
    "linecache",
    "mailbox",
    "mimetypes",
    "numbers",
    "pdb",
    "pkgutil",
    "poplib",
    "pstats",
    "pydoc",
    "quopri",
    "reprlib",
    "runpy",
    "sched",
    "selectors",
    "shelve",
    "shlex",
    "signal",
    "smtplib",
    "socketserver",
    "ssl",
    "stat",
    "symtable",
    "sysconfig",
    "tabnanny",
    "telnetlib",
    "timeit",
    "token",
    "tokenize",
    "tomllib",
    "trace",
    "tracemalloc",
    "unicodedata",
    "wave",
    "webbrowser",
    "wsgiref.simple_server",
    "zipapp",
    "zoneinfo",
    "multiprocessing",
    "ftplib",
    "optparse",
    "plistlib",
]


@dataclass(frozen=True)
class Passage:
    text: str
    source: str  # module.qualname or pydoc topic
    title: str  # what a question would name ("os.path.join", "for statement")

    @property
    def key(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()

    def heldout(self, every: int = 20) -> bool:
        """Stable held-out membership (about 1 in `every`)."""
        return int(self.key[:8], 16) % every == 0


def _merge(paragraphs: Sequence[str], count: Callable[[str], int], lo: int, hi: int) -> list[str]:
    """Greedily merge paragraphs into passages of lo..hi tokens; long ones are cut at sentences."""
    out: list[str] = []
    cur = ""
    for para in paragraphs:
        para = para.strip()
        if not para:
            continue
        parts = re.split(r"(?<=[.!?])\s+", para) if count(para) > hi else [para]
        for part in parts:
            joined = f"{cur}\n\n{part}" if cur else part
            if count(joined) <= hi:
                cur = joined
                continue
            if count(cur) >= lo:
                out.append(cur)
            cur = part if count(part) <= hi else ""
    if cur and count(cur) >= lo:
        out.append(cur)
    return out


def _doc_items(module_name: str) -> Iterator[tuple[str, str]]:
    with warnings.catch_warnings():  # deprecated aliases (typing.io) warn when read
        warnings.simplefilter("ignore", DeprecationWarning)
        yield from _doc_items_of(module_name)


def _doc_items_of(module_name: str) -> Iterator[tuple[str, str]]:
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", module_name) not in (
            module_name,
            None,
            "builtins",
            module.__name__,
        ):
            continue
        if not (inspect.isroutine(obj) or inspect.isclass(obj)):
            continue
        doc = inspect.getdoc(obj)
        if doc:
            yield f"{module_name}.{name}", doc
        if inspect.isclass(obj):
            for attr, member in sorted(vars(obj).items()):
                if attr.startswith("_"):
                    continue
                if not (inspect.isroutine(member) or isinstance(member, property)):
                    continue
                mdoc = inspect.getdoc(member)
                if mdoc:
                    yield f"{module_name}.{name}.{attr}", mdoc


def reference_passages(
    count: Callable[[str], int], lo: int = 60, hi: int = 180, modules: Sequence[str] = MODULES
) -> list[Passage]:
    """pydoc topics + stdlib docstrings as passages of lo..hi tokens (by `count`), deduplicated."""
    out: list[Passage] = []
    seen: set[str] = set()

    def add(text: str, source: str, title: str) -> None:
        if text not in seen:
            seen.add(text)
            out.append(Passage(text, source, title))

    try:
        from pydoc_data import topics as pydoc_topics

        by_topic: dict[str, str] = dict(pydoc_topics.topics)
    except ImportError:  # pragma: no cover - stripped Python builds
        by_topic = {}
    for topic in sorted(by_topic):
        paragraphs = [
            " ".join(line.strip() for line in p.splitlines())
            for p in re.split(r"\n\s*\n", by_topic[topic])
        ]
        for text in _merge(paragraphs, count, lo, hi):
            add(text, f"pydoc:{topic}", topic.replace("-", " "))
    for module in modules:
        for qualname, doc in _doc_items(module):
            paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc)]
            body = _merge(paragraphs, count, max(lo - 20, 24), hi - 8)
            for text in body:
                add(f"{qualname}: {text}", qualname, qualname)
    return out


def load_corpus(spec: str, count: Callable[[str], int]) -> list[Passage]:
    """``stdlib`` or a path: .jsonl with a ``text`` field (``title`` optional), or .txt (blank-line
    separated passages)."""
    if spec == "stdlib":
        return reference_passages(count)
    path = Path(spec)
    if not path.exists():
        raise InputError(f"corpus {spec!r}: no such file (use 'stdlib' or a .jsonl/.txt path)")
    passages: list[Passage] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                row = json.loads(line)
                passages.append(Passage(row["text"], f"{path.name}:{n}", row.get("title", "")))
    else:
        for n, block in enumerate(re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))):
            if block.strip():
                passages.append(Passage(block.strip(), f"{path.name}:{n}", ""))
    return passages


# ---------------------------------------------------------------- docstring passages

DOCSTRING_MODULES = [
    "argparse",
    "asyncio",
    "bisect",
    "calendar",
    "collections",
    "concurrent.futures",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "email.message",
    "enum",
    "fractions",
    "functools",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html.parser",
    "http.client",
    "imaplib",
    "inspect",
    "io",
    "ipaddress",
    "itertools",
    "json",
    "logging",
    "mailbox",
    "mimetypes",
    "numbers",
    "operator",
    "optparse",
    "os",
    "pathlib",
    "pdb",
    "pprint",
    "queue",
    "random",
    "re",
    "sched",
    "secrets",
    "selectors",
    "shelve",
    "shlex",
    "shutil",
    "smtplib",
    "socket",
    "sqlite3",
    "ssl",
    "statistics",
    "string",
    "struct",
    "subprocess",
    "tarfile",
    "tempfile",
    "textwrap",
    "threading",
    "timeit",
    "traceback",
    "typing",
    "unittest",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "warnings",
    "weakref",
    "zipfile",
    "zoneinfo",
]


def docstring_passages(max_words: int = 160, min_words: int = 40) -> list[str]:
    """Docstring passages from standard-library modules, deduplicated, in a fixed order."""
    seen: set[str] = set()
    passages: list[str] = []
    for name in DOCSTRING_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        docs = [inspect.getdoc(module) or ""]
        with warnings.catch_warnings():  # e.g. typing.io: deprecated aliases warn when read
            warnings.simplefilter("ignore", DeprecationWarning)
            for attr in sorted(dir(module)):
                if attr.startswith("_"):
                    continue
                obj = getattr(module, attr, None)
                if getattr(obj, "__module__", None) == module.__name__:
                    docs.append(inspect.getdoc(obj) or "")
        for doc in docs:
            for passage in _pack(doc, max_words, min_words):
                key = passage[:200]
                if key not in seen:
                    seen.add(key)
                    passages.append(passage)
    return passages


def _pack(doc: str, max_words: int, min_words: int) -> list[str]:
    """Whole paragraphs packed into passages of `min_words`..`max_words` words."""
    out: list[str] = []
    current: list[str] = []
    count = 0
    for para in re.split(r"\n\s*\n", doc):
        para = para.strip()
        n = len(para.split())
        if not para or n > max_words:
            continue
        if count + n > max_words and current:
            if count >= min_words:
                out.append("\n\n".join(current))
            current, count = [], 0
        current.append(para)
        count += n
    if count >= min_words:
        out.append("\n\n".join(current))
    return out
