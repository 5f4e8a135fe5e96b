"""ctxzip.retrievers: a pickle-free retrieval store (FAISS + SQLite), hybrid BM25 search,
ingest with token-aware chunking, and the same interface over Qdrant.

    from ctxzip.retrievers import Store, open_store
    store = Store()                           # all-MiniLM-L6-v2, Flat, cosine
    store.ingest(["docs/"]);  store.save("my-store")
    hits = open_store("my-store").hybrid_search("how do I ...", k=5)
"""

from ctxzip.retrievers.backends import open_store
from ctxzip.retrievers.base import BaseStore, Document, Hit
from ctxzip.retrievers.embeddings import DEFAULT_MODEL, Embedder, SentenceTransformerEmbedder
from ctxzip.retrievers.errors import StoreCorruptError, StoreError, StoreMismatchError
from ctxzip.retrievers.faiss_index import IndexSpec
from ctxzip.retrievers.store import FaissStore, Store

__all__ = [
    "DEFAULT_MODEL",
    "BaseStore",
    "Document",
    "Embedder",
    "FaissStore",
    "Hit",
    "IndexSpec",
    "SentenceTransformerEmbedder",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreMismatchError",
    "open_store",
]
