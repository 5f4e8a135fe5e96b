"""A seeded generator of multi-document QA with distractors.

Each item asks about one fact (an attribute of an invented entity) placed in one of
`n_docs` passages; the other passages are about entities of the same kind and, with
`difficulty` > 0, state the same relation for look-alike entities (near misses), so a
compressor that keeps "any sentence about founders" is not enough. `doc_sentences`
sets the length, `position` where the gold passage goes. Invented names keep the
reader from answering from memory; the same seed always gives the same items.
"""

from __future__ import annotations

import random
from typing import Any

from ctxzip.errors import InputError
from ctxzip.evals.items import QAItem

_SYL = [
    "ar",
    "bel",
    "cor",
    "dan",
    "el",
    "fen",
    "gar",
    "hal",
    "is",
    "jor",
    "kel",
    "lun",
    "mor",
    "nal",
    "or",
    "pen",
    "quin",
    "ros",
    "sel",
    "tav",
    "ul",
    "ven",
    "wes",
    "yar",
    "zel",
]
_KINDS = {
    "observatory": ["Observatory", "Institute", "Laboratory", "Station"],
    "river": ["River", "Creek", "Water"],
    "company": ["Works", "Industries", "Holdings", "Trading Company"],
}
# kind -> [(relation question, sentence template, answer kind)]
_FACTS: dict[str, list[tuple[str, str, str]]] = {
    "observatory": [
        ("Who founded the {e}?", "The {e} was founded by {a}.", "person"),
        ("In which year did the {e} open?", "The {e} opened to visitors in {a}.", "year"),
        ("In which town is the {e}?", "The {e} stands on a hill above the town of {a}.", "town"),
    ],
    "river": [
        ("Into which lake does the {e} flow?", "The {e} flows into Lake {a}.", "name"),
        ("How long is the {e} in kilometres?", "The {e} is {a} kilometres long.", "number"),
        ("Which town is at the source of the {e}?", "The {e} rises near the town of {a}.", "town"),
    ],
    "company": [
        ("Who runs the {e}?", "The {e} is run by {a}.", "person"),
        ("What does the {e} make?", "The {e} makes {a}.", "product"),
        ("In which year was the {e} established?", "The {e} was established in {a}.", "year"),
    ],
}
_PRODUCTS = [
    "copper wire",
    "glass lenses",
    "paper lanterns",
    "ceramic tiles",
    "wool blankets",
    "brass clocks",
    "rope ladders",
    "oak barrels",
    "tin whistles",
    "silk thread",
]
_FILLER = [
    "Local guides describe the {e} as one of the quieter places in the region.",
    "Records about the {e} were kept in the municipal archive for many decades.",
    "Visitors to the {e} often remark on the changing weather of the valley.",
    "A small museum nearby displays photographs of the {e} from earlier years.",
    "The {e} appears in several travel books written during the last century.",
    "Maps of the area mark the {e} with a distinctive symbol.",
    "Residents hold a yearly festival that mentions the {e} in its songs.",
    "Historians disagree about some minor details in the early story of the {e}.",
    "The path leading to the {e} is lined with old stone walls and birch trees.",
    "School groups visit the {e} in spring when the roads are passable.",
]


def _name(rng: random.Random, parts: int = 2) -> str:
    return "".join(rng.choice(_SYL) for _ in range(parts)).capitalize()


def _value(rng: random.Random, kind: str) -> str:
    if kind == "person":
        return f"{_name(rng)} {_name(rng, 3)}"
    if kind == "year":
        return str(rng.randint(1701, 1989))
    if kind == "number":
        return str(rng.randint(12, 940))
    if kind == "product":
        return rng.choice(_PRODUCTS)
    return _name(rng, 3)  # town, name


def _passage(rng: random.Random, entity: str, facts: list[str], n_sentences: int) -> str:
    fillers = rng.sample(_FILLER, k=min(len(_FILLER), max(0, n_sentences - len(facts))))
    sentences = [f.format(e=entity) for f in fillers]
    for fact in facts:
        sentences.insert(rng.randint(0, len(sentences)), fact)
    return " ".join(sentences)


def generate(
    n_items: int = 50,
    n_docs: int = 5,
    doc_sentences: int = 6,
    difficulty: int = 1,
    position: str = "random",
    seed: int = 0,
) -> list[QAItem]:
    """`n_items` questions, each with `n_docs` passages of about `doc_sentences` sentences.

    `difficulty` is how many distractor passages state the asked relation for another
    entity (0 = none); `position` is random, start, middle or end (the gold passage's slot).
    """
    if n_items < 1 or n_docs < 1 or doc_sentences < 1 or difficulty < 0:
        raise InputError("n_items, n_docs and doc_sentences must be >= 1, difficulty >= 0")
    if position not in ("random", "start", "middle", "end"):
        raise InputError(f"position must be random, start, middle or end, not {position!r}")
    rng = random.Random(seed)
    items = []
    for n in range(n_items):
        kind = rng.choice(sorted(_KINDS))
        suffix = rng.choice(_KINDS[kind])
        used: set[str] = set()
        entities: list[str] = []
        while len(entities) < n_docs:
            e = f"{_name(rng)} {suffix}"
            if e not in used:
                used.add(e)
                entities.append(e)
        q_template, f_template, a_kind = rng.choice(_FACTS[kind])
        answer = _value(rng, a_kind)
        passages = []
        for i, entity in enumerate(entities):
            facts = []
            if i == 0:
                facts.append(f_template.format(e=entity, a=answer))
            elif i <= difficulty:
                other = _value(rng, a_kind)
                while other == answer:
                    other = _value(rng, a_kind)
                facts.append(f_template.format(e=entity, a=other))
            _, other_template, other_kind = rng.choice(
                [f for f in _FACTS[kind] if f[1] != f_template]
            )
            facts.append(other_template.format(e=entity, a=_value(rng, other_kind)))
            passages.append(_passage(rng, entity, facts, doc_sentences))
        gold_passage = passages.pop(0)
        slot = {"start": 0, "middle": len(passages) // 2, "end": len(passages)}.get(
            position, rng.randint(0, len(passages))
        )
        passages.insert(slot, gold_passage)
        items.append(
            QAItem(
                id=f"syn-{seed}-{n}",
                question=q_template.format(e=entities[0]),
                answers=[answer],
                contexts=passages,
                gold_index=slot,
                metadata={"kind": kind, "difficulty": difficulty, "position": slot},
            )
        )
    return items


def parse_generator_spec(spec: str) -> dict[str, Any]:
    """`synthetic:n_items=40,n_docs=8,difficulty=2` -> keyword arguments for `generate`."""
    _, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for pair in filter(None, rest.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise InputError(f"generator option {pair!r} is not key=value")
        options[key.strip()] = value.strip() if key.strip() == "position" else _int(key, value)
    allowed = {"n_items", "n_docs", "doc_sentences", "difficulty", "position", "seed"}
    unknown = set(options) - allowed
    if unknown:
        raise InputError(f"unknown generator options {sorted(unknown)} (known: {sorted(allowed)})")
    return options


def _int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(f"generator option {key} must be an integer, got {value!r}") from None
