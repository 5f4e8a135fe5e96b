"""Ingest files, folders and JSONL into a store, chunked, with source and offsets recorded.

Each chunk's metadata holds `source` (the file's absolute path), `chunk` (its number),
`start` / `end` (character offsets in the source text, or in the JSONL record's text)
and `tokens`; JSONL records add `line`, `doc_id` and their own metadata. Re-ingesting
a source replaces its earlier chunks, so indexing the same folder twice adds nothing.
Bad files (invalid UTF-8, binary, malformed JSONL) are skipped and reported; they never
stop the others from being indexed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ctxzip import distributed
from ctxzip.distributed import ENGINES
from ctxzip.errors import InputError
from ctxzip.retrievers.chunking import Chunk, chunk_text

TEXT_EXTENSIONS = frozenset(
    [
        ".txt",
        ".md",
        ".markdown",
        ".rst",
        ".text",
        ".html",
        ".htm",
        ".xml",
        ".tex",
        ".csv",
        ".tsv",
        ".log",
        ".py",
        ".js",
        ".ts",
        ".java",
        ".c",
        ".h",
        ".cpp",
        ".go",
        ".rs",
        ".rb",
        ".sh",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".json",
        ".jsonl",
    ]
)


class IngestTarget(Protocol):
    """What ingest writes through: any store (`BaseStore` satisfies it)."""

    embedder: Any

    def upsert_texts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        ids: Sequence[str] | None = None,
        vectors: Any = None,
        progress: bool | None = None,
    ) -> list[str]: ...

    def ids_where(self, filter: Any = None) -> list[str]: ...

    def delete(self, ids: Sequence[str]) -> int: ...


@dataclass
class IngestReport:
    """What an ingest did: files read, chunks added, and every file skipped with the reason."""

    files: int = 0
    chunks: int = 0
    ids: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Record:
    source: str
    text: str
    metadata: dict[str, Any]
    id_prefix: str


def iter_files(
    paths: Sequence[str | Path], extensions: frozenset[str] | None = None
) -> Iterator[Path]:
    """Files named directly (any extension), and text files found under folders (sorted)."""
    exts = TEXT_EXTENSIONS if extensions is None else extensions
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    p = Path(root) / name
                    if not name.startswith(".") and p.suffix.lower() in exts:
                        yield p
        elif path.exists():
            yield path
        else:
            raise InputError(f"{path} does not exist")


def read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise InputError("binary file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 (byte {exc.start})") from None


def read_jsonl(path: Path, text_field: str = "text", id_field: str = "id") -> list[_Record]:
    """One record per line: `text_field` is the text; `metadata` (a dict) and every other
    field except `id_field` become metadata. Any bad line fails the whole file (named)."""
    records = []
    source = str(path.resolve())
    for n, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {n}: invalid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"line {n}: expected a JSON object")
        text = obj.get(text_field)
        if not isinstance(text, str):
            raise InputError(f"line {n}: field {text_field!r} must be a string")
        meta = obj.get("metadata", {})
        if not isinstance(meta, dict):
            raise InputError(f"line {n}: 'metadata' must be an object")
        extra = {k: v for k, v in obj.items() if k not in (text_field, id_field, "metadata")}
        doc_id = str(obj[id_field]) if obj.get(id_field) is not None else f"{source}:{n}"
        records.append(
            _Record(source, text, {**extra, **meta, "line": n, "doc_id": doc_id}, doc_id)
        )
    return records


def ingest(
    store: IngestTarget,
    paths: Sequence[str | Path],
    chunk_tokens: int = 200,
    overlap_tokens: int = 32,
    tokenizer: str | None = None,
    text_field: str = "text",
    id_field: str = "id",
    extensions: frozenset[str] | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
) -> IngestReport:
    """Chunk every file under `paths` and upsert the chunks (ids `<source or doc id>#<n>`).

    `tokenizer` counts chunk sizes; it defaults to the store's embedding model. With
    ``engine="ray"`` chunking and embedding run on Ray workers (`address` or
    ``$RAY_ADDRESS``, else a local Ray) and the store gets the same vectors a local run
    computes: the embedding batches are the ones the local encoder would form.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {ENGINES}, not {engine!r}")
    tok = tokenizer or store.embedder.model_id
    report = IngestReport()
    records: list[_Record] = []
    sources: list[str] = []
    for path in iter_files(paths, extensions):
        try:
            if path.suffix.lower() == ".jsonl":
                found = read_jsonl(path, text_field, id_field)
            else:
                source = str(path.resolve())
                found = [_Record(source, read_text(path), {}, source)]
        except (InputError, OSError) as exc:
            report.skipped.append((str(path), str(exc)))
            continue
        report.files += 1
        sources.append(found[0].source if found else str(path.resolve()))
        records.extend(found)
    vectors: np.ndarray | None = None
    if engine == "local":
        chunked = [_chunks(r.text, tok, chunk_tokens, overlap_tokens) for r in records]
    else:
        chunked, vectors = _ray_chunks_and_vectors(
            store, records, tok, chunk_tokens, overlap_tokens, address, workers
        )
    texts: list[str] = []
    metas: list[dict[str, Any]] = []
    ids: list[str] = []
    for rec, chunks in zip(records, chunked, strict=True):
        for chunk in chunks:
            texts.append(chunk.text)
            ids.append(f"{rec.id_prefix}#{chunk.index}")
            metas.append(
                {
                    **(metadata or {}),
                    **rec.metadata,
                    "source": rec.source,
                    "chunk": chunk.index,
                    "start": chunk.start,
                    "end": chunk.end,
                    "tokens": chunk.tokens,
                }
            )
    if texts:
        report.ids = store.upsert_texts(texts, metas, ids, vectors=vectors, progress=progress)
    fresh = set(report.ids)
    for source in sources:  # drop chunks earlier runs stored that this run did not replace
        stale = [i for i in store.ids_where({"source": source}) if i not in fresh]
        store.delete(stale)
    report.chunks = len(report.ids)
    return report


def _chunks(text: str, tokenizer: str, chunk_tokens: int, overlap_tokens: int) -> list[Chunk]:
    return [c for c in chunk_text(text, tokenizer, chunk_tokens, overlap_tokens) if c.text.strip()]


def chunk_rows(
    tokenizer: str, chunk_tokens: int, overlap_tokens: int
) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Ray work: rows {text} -> rows {chunks: JSON [[text, start, end, tokens, index], ...]}."""

    def run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            chunks = _chunks(row["text"], tokenizer, chunk_tokens, overlap_tokens)
            fields = [[c.text, c.start, c.end, c.tokens, c.index] for c in chunks]
            out.append({"chunks": json.dumps(fields, ensure_ascii=False)})
        return out

    return run


def embed_rows(
    model_id: str, device: str = "auto"
) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Ray work: rows {texts: JSON list, one encoder batch} -> rows {vectors: float32 bytes}."""
    from ctxzip.retrievers.embeddings import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(model_id, device=device)

    def run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            texts = json.loads(row["texts"])
            embedder.encoder.batch_size = max(1, len(texts))  # the batch as formed: one pass
            vecs = np.ascontiguousarray(embedder.embed(texts, progress=False), dtype=np.float32)
            out.append({"vectors": vecs.tobytes()})
        return out

    return run


def encoder_batches(texts: Sequence[str], batch_size: int) -> list[list[str]]:
    """The batches `ctxzip.encoder` forms for `texts`: distinct texts, by length, in order."""
    distinct = list(dict.fromkeys(texts))
    distinct.sort(key=len)
    return [distinct[i : i + batch_size] for i in range(0, len(distinct), batch_size)]


def _ray_chunks_and_vectors(
    store: IngestTarget,
    records: list[_Record],
    tokenizer: str,
    chunk_tokens: int,
    overlap_tokens: int,
    address: str | None,
    workers: int | None,
) -> tuple[list[list[Chunk]], np.ndarray | None]:
    embedder = store.embedder
    encoder = getattr(embedder, "encoder", None)
    if encoder is None:
        raise InputError("--engine ray embeds with the default sentence-transformers embedder")
    with distributed.ray_session(address, num_cpus=workers) as ray:
        n = workers or distributed.default_workers(ray)
        rows = distributed.map_rows(
            ray, [{"text": r.text} for r in records], "ctxzip.retrievers.ingest:chunk_rows",
            {"tokenizer": tokenizer, "chunk_tokens": chunk_tokens,
             "overlap_tokens": overlap_tokens},
            workers=n, batch_size=16,
        )  # fmt: skip
        chunked = [
            [Chunk(t, s, e, k, i) for t, s, e, k, i in json.loads(row["chunks"])] for row in rows
        ]
        texts = [c.text for chunks in chunked for c in chunks]
        if not texts:
            return chunked, None
        batches = encoder_batches(texts, encoder.batch_size)
        found: dict[str, np.ndarray] = {}
        out = distributed.map_rows(
            ray, [{"texts": json.dumps(b, ensure_ascii=False)} for b in batches],
            "ctxzip.retrievers.ingest:embed_rows",
            {"model_id": embedder.model_id, "device": getattr(embedder, "device", "auto")},
            workers=n, batch_size=1,
        )  # fmt: skip
        for batch, row in zip(batches, out, strict=True):
            vecs = np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(batch), -1)
            found.update(zip(batch, vecs, strict=True))
    return chunked, np.stack([found[t] for t in texts])
