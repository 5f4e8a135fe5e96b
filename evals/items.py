"""The one QA item every data set loads into (and the generator writes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class QAItem:
    """One question with its gold answers and the passages a reader gets."""

    id: str
    question: str
    answers: list[str]
    contexts: list[str] = field(default_factory=list)
    gold_index: int | None = None
    gold_doc_ids: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """FlashRAG-compatible JSON form."""
        out: dict[str, Any] = {
            "id": self.id,
            "question": self.question,
            "golden_answers": self.answers,
            "contexts": self.contexts,
        }
        if self.gold_index is not None:
            out["gold_index"] = self.gold_index
        if self.gold_doc_ids:
            out["gold_doc_ids"] = self.gold_doc_ids
        if self.metadata:
            out["metadata"] = self.metadata
        return out
