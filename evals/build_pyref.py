"""Build the bundled `pyref` QA set from hand-written questions and CPython's reference text.

Source text: `pydoc_data.topics` as shipped with CPython 3.11.7 (the Python language and
library reference topics used by `help()`), © Python Software Foundation, PSF License
Version 2 (permissive; https://docs.python.org/3/license.html). The questions and gold
answers in `data/pyref_questions.jsonl` were written by hand for ctxzip (Apache-2.0).

Each question names a topic and an evidence phrase; the passage of that topic holding
the phrase (and a gold answer) becomes the gold passage, and three distractor passages
(one from the same topic when it has one, the rest from other topics, none holding a
gold answer) are placed around it at a seeded position. Run
``python -m ctxzip.evals.build_pyref`` to rebuild `data/pyref_qa.jsonl`; the shipped file
is the output on CPython 3.11.7, so results do not depend on the local Python.
"""

from __future__ import annotations

import json
import random
import re
import sys

from ctxzip.evals.datasets import bundled_path
from ctxzip.evals.metrics import answer_retained, normalize_answer

DATA = bundled_path("pyref").parent
SOURCE = "CPython 3.11.7 pydoc_data.topics (Python reference), PSF License Version 2"
MIN_WORDS, MAX_WORDS = 45, 220
N_DISTRACTORS = 3


def _clean(paragraph: str) -> str:
    lines = paragraph.splitlines()
    if any(line.startswith(" ") for line in lines):  # code and grammar: keep layout
        return "\n".join(line.rstrip() for line in lines).strip("\n")
    return " ".join(line.strip() for line in lines)


def passages(topic_text: str) -> list[str]:
    """The topic cut into passages of about MIN_WORDS..MAX_WORDS words (paragraphs merged)."""
    paras = [p for p in re.split(r"\n\s*\n", topic_text) if p.strip()]
    paras = [_clean(p) for p in paras if not re.fullmatch(r"[*=\-]+", p.strip().splitlines()[-1])]
    out: list[str] = []
    current: list[str] = []
    for p in paras:
        current.append(p)
        words = sum(len(c.split()) for c in current)
        if words >= MIN_WORDS:
            out.append("\n\n".join(current))
            current = []
    if current:
        if out and sum(len(c.split()) for c in current) < MIN_WORDS // 2:
            out[-1] += "\n\n" + "\n\n".join(current)
        else:
            out.append("\n\n".join(current))
    return [_cap(p) for p in out]


def _cap(passage: str) -> str:
    words = passage.split(" ")
    return passage if len(passage.split()) <= MAX_WORDS * 2 else " ".join(words[: MAX_WORDS * 2])


def _squash(text: str) -> str:
    return " ".join(text.split())


def build(seed: int = 13) -> tuple[list[dict], list[str]]:
    from pydoc_data.topics import topics

    by_topic = {t: passages(text) for t, text in topics.items()}
    rng = random.Random(seed)
    items, problems = [], []
    for line in (DATA / "pyref_questions.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        answers = [a for a in q["answers"] if normalize_answer(a)]
        if not answers:
            problems.append(f"{q['id']}: no answer survives normalisation")
            continue
        chunks = by_topic.get(q["topic"])
        if not chunks:
            problems.append(f"{q['id']}: unknown topic {q['topic']}")
            continue
        gold = next(
            (
                c
                for c in chunks
                if _squash(q["evidence"]) in _squash(c) and answer_retained(c, answers)
            ),
            None,
        )
        gold = gold or next((c for c in chunks if answer_retained(c, answers)), None)
        if gold is None:
            problems.append(f"{q['id']}: no passage of {q['topic']} holds {answers}")
            continue
        same = [c for c in chunks if c != gold and not answer_retained(c, answers)]
        others = [
            c
            for t, cs in sorted(by_topic.items())
            if t != q["topic"]
            for c in cs
            if not answer_retained(c, answers)
        ]
        distractors = rng.sample(same, 1) if same else []
        distractors += rng.sample(others, N_DISTRACTORS - len(distractors))
        slot = rng.randint(0, len(distractors))
        contexts = [*distractors[:slot], gold, *distractors[slot:]]
        items.append(
            {
                "id": q["id"],
                "question": q["question"],
                "golden_answers": answers,
                "contexts": contexts,
                "gold_index": slot,
                "metadata": {"topic": q["topic"], "source": SOURCE},
            }
        )
    return items, problems


def main() -> int:
    items, problems = build()
    for p in problems:
        print("skipped", p, file=sys.stderr)
    with (DATA / "pyref_qa.jsonl").open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"{len(items)} questions written, {len(problems)} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
