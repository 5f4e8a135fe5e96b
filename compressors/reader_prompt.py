"""The one question-answering prompt every reader in ctxzip uses.

The eval harness asks its readers with it, and the methods that answer through the
reader's own model (xrag's soft tokens, the image reader) train and answer with it too,
so their scores compare with the text methods'. It lives here, below both, because
compressors may not import the evals package.
"""

from __future__ import annotations

SYSTEM_PROMPT = (
    "Answer the question using the context. Reply with the answer only: a few words, "
    "no explanation."
)
USER_TEMPLATE = "Context:\n{context}\n\nQuestion: {question}\nAnswer:"
NO_CONTEXT_TEMPLATE = "Question: {question}\nAnswer:"


def user_prompt(question: str, context: str) -> str:
    """The user turn (with no context: the no-context baseline's)."""
    if not context.strip():
        return NO_CONTEXT_TEMPLATE.format(question=question)
    return USER_TEMPLATE.format(context=context, question=question)


def messages_for(question: str, context: str) -> list[dict[str, str]]:
    """The chat messages of one question."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_prompt(question, context)},
    ]


def clean_answer(text: str) -> str:
    """The first non-empty line of a reply, without an echoed 'Answer:' label."""
    for line in text.strip().splitlines():
        line = line.strip()
        if line.lower().startswith("answer:"):
            line = line[7:].strip()
        if line:
            return line
    return ""
