"""The self-information compressor with the real SmolLM2-135M-Instruct scorer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ctxzip.budget import Budget
from ctxzip.cli import main
from ctxzip.compressors.self_information import split_phrases
from ctxzip.errors import CtxzipError
from ctxzip.models import SMOLLM, load_tokenizer
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionRequest
from ctxzip.units import reconstruct

pytestmark = pytest.mark.slow

EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889. The tower is 330 metres tall, about the same height as an 81-storey "
    "building."
)
CURIE = (
    "Marie Curie was a Polish and naturalised-French physicist and chemist who conducted "
    "pioneering research on radioactivity. She shared the 1903 Nobel Prize in Physics with Pierre "
    "Curie and Henri Becquerel. She won the Nobel Prize in Chemistry in 1911 for the discovery of "
    "polonium and radium."
)
AMAZON = (
    "The Amazon River in South America is the largest river by discharge volume of water in the "
    "world. It rises in the Andes of Peru, crosses Brazil from west to east and empties into the "
    "Atlantic Ocean near the city of Belem."
)
KILIMANJARO = (
    "Mount Kilimanjaro is a dormant volcano in Tanzania. It has three volcanic cones: Kibo, "
    "Mawenzi, and Shira. It is the highest mountain in Africa, about 5,895 metres above sea level."
)
BORING = "The the the the the. " * 12
# Retrieved text the scorer has never seen (invented facts): a 135M model knows when Marie
# Curie won her prize, so that date is predictable, hence cheap, and the method drops it.
NOVEL = [
    (
        "How long is the Halvern Viaduct?",
        "412",
        "The Halvern Viaduct carries the northern railway across the Tesk valley. Construction "
        "began in 1958 under the engineer Ilse Marrow, and the viaduct opened to trains in 1964. "
        "It has 23 arches and is 412 metres long.",
    ),
    (
        "What is the main export of Quillon Bay?",
        "mackerel",
        "Quillon Bay is a small fishing town on the west coast of Norvania. Its harbour was "
        "rebuilt after the storm of 1987. The town's main export is smoked mackerel, shipped "
        "mostly to Denmark.",
    ),
    (
        "Who won the 2019 Orrin Prize?",
        "Okafor",
        "The Orrin Prize for chemistry is awarded every two years by the Vesta Society. The 2019 "
        "prize went to Dana Okafor for her work on solid-state batteries. The prize carries an "
        "award of 40,000 euros.",
    ),
    (
        "Which language was the new scheduler written in?",
        "Rust",
        "Project Lumen was a software rewrite at the Calder Institute. The team replaced the old "
        "Fortran scheduler with a new one written in Rust, which cut batch times by about a "
        "third. The rewrite was led by Tomas Reyes.",
    ),
]
CASES = [
    ("How tall is the Eiffel Tower?", "330", EIFFEL),
    ("In which year did Marie Curie win the Nobel Prize in Chemistry?", "1911", CURIE),
    ("Which ocean does the Amazon River flow into?", "Atlantic", AMAZON),
    ("In which country is Mount Kilimanjaro?", "Tanzania", KILIMANJARO),
]


@pytest.fixture(scope="module")
def comp() -> Any:
    return get_compressor("self-information")  # query-contrastive by default


def test_answers_survive_at_half_rate(comp: Any) -> None:
    """Token-level pruning is no QA reader: half the answers survive (measured: 4 of 8)."""
    cases = NOVEL + CASES
    requests = [CompressionRequest.of([doc], q, Budget(rate=0.5)) for q, _, doc in cases]
    results = comp.compress_batch(requests)
    survived = [a for (_, a, _), r in zip(cases, results, strict=True) if a in r.text]
    assert len(survived) >= 4, [r.text for r in results]
    assert all(r.tokens_out <= int(0.5 * r.tokens_in) for r in results)


@pytest.mark.parametrize("unit", ["word", "phrase"])
@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_budget_holds_within_five_percent(comp: Any, unit: str, rate: float) -> None:
    c = get_compressor("self-information", unit=unit)
    result = c.compress([EIFFEL, CURIE, AMAZON], budget=Budget(rate=rate))
    budget = Budget(rate=rate).tokens_for(result.tokens_in)
    assert result.tokens_out <= budget
    assert result.tokens_out >= 0.95 * budget, (result.tokens_out, budget)
    assert result.requested_rate == pytest.approx(rate, abs=0.01)


def test_target_tokens_budget(comp: Any) -> None:
    result = comp.compress([EIFFEL, KILIMANJARO], "volcano?", Budget(target_tokens=30))
    assert 28 <= result.tokens_out <= 30


def test_budget_is_global_across_contexts(comp: Any) -> None:
    """Predictable filler gives way first, wherever it sits."""
    result = comp.compress([BORING, CURIE], budget=Budget(rate=0.5))
    boring_kept = sum(e - s for s, e in result.kept[0]) / len(BORING)
    curie_kept = sum(e - s for s, e in result.kept[1]) / len(CURIE)
    assert curie_kept > 2 * boring_kept


def test_kept_spans_are_the_text_in_order(comp: Any) -> None:
    result = comp.compress([EIFFEL], budget=Budget(rate=0.4))
    spans = result.kept[0]
    assert spans == sorted(spans)
    for word in result.texts[0].split():
        assert word in EIFFEL


def test_sentence_units_keep_whole_sentences() -> None:
    c = get_compressor("self-information", unit="sentence")
    result = c.compress([EIFFEL], budget=Budget(rate=0.7))
    for sentence in result.texts[0].split(". "):
        assert sentence.rstrip(".") in EIFFEL
    assert result.tokens_out <= int(0.7 * result.tokens_in)


def test_protected_spans_always_survive() -> None:
    c = get_compressor("self-information", protect={"force": ["Belem"], "patterns": [r"\d+"]})
    result = c.compress([AMAZON, EIFFEL], budget=Budget(rate=0.25))
    for kept in ("Belem", "1887", "1889", "330", "81"):
        assert kept in result.text
    assert result.tokens_out <= int(0.25 * result.tokens_in)


def test_batch_matches_single_calls(comp: Any) -> None:
    """Padding and batching must not change a single token's score."""
    requests = [CompressionRequest.of([doc], q, Budget(rate=0.5)) for q, _, doc in CASES[:2]]
    batched = comp.compress_batch(requests)
    single = [comp.compress(list(r.contexts), r.query, r.budget) for r in requests]
    assert [b.texts for b in batched] == [s.texts for s in single]


def test_long_input_is_scored_in_overlapping_windows() -> None:
    long_text = " ".join([EIFFEL, CURIE, AMAZON, KILIMANJARO])
    windowed = get_compressor("self-information", window=64, overlap=16)
    whole = get_compressor("self-information", window=1024)
    [(offsets, values)] = windowed.token_surprisal([long_text])
    [(_, reference)] = whole.token_surprisal([long_text])
    assert len(values) == len(reference) > 150
    assert all(v > 0 for v in values)  # every token scored, none left at the default
    # tokens in the first window see the same left context either way
    assert values[:40] == pytest.approx(reference[:40], abs=1e-3)
    assert offsets[0][0] == 0
    result = windowed.compress([long_text], budget=Budget(rate=0.5))
    assert result.tokens_out <= int(0.5 * result.tokens_in)


def test_query_conditioning_changes_scores(comp: Any) -> None:
    plain = get_compressor("self-information")
    [(_, given)] = comp.token_surprisal([EIFFEL], ["How tall is the Eiffel Tower?"])
    [(_, alone)] = plain.token_surprisal([EIFFEL])
    assert len(given) == len(alone) and given != alone


def test_edge_inputs(comp: Any) -> None:
    result = comp.compress(["", "   ", EIFFEL], budget=Budget(rate=0.5))
    assert result.texts[:2] == ["", ""] and result.texts[2]
    text = "Nur ein kurzer deutscher Satz über den Eiffelturm in Paris, 1889 gebaut. 東京は日本の首都です。"
    result = comp.compress([text], budget=Budget(rate=0.5))
    assert 0 < result.tokens_out <= int(0.5 * result.tokens_in)
    tiny = comp.compress(["Paris."], budget=Budget(target_tokens=1))
    assert tiny.tokens_out <= 1


def test_phrases_tile_the_text() -> None:
    text = EIFFEL + '\n\nSee https://example.com/x?y=1 and {"key": [1, 2, 3]} for more.'
    phrases = split_phrases(text)
    assert reconstruct(text, phrases) == text
    assert any(p.text == "https://example.com/x?y=1" for p in phrases)
    assert max(len(p.text.split()) for p in phrases if p.kind == "text") <= 6


def test_bad_options_fail_clearly() -> None:
    with pytest.raises(CtxzipError, match="unit"):
        get_compressor("self-information", unit="paragraph")
    with pytest.raises(CtxzipError, match="overlap"):
        get_compressor("self-information", window=64, overlap=40)


async def test_acompress_runs_off_the_loop(comp: Any) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    result = await comp.acompress([EIFFEL], "How tall?", Budget(rate=0.5))
    task.cancel()
    assert result.method == "self-information" and ticks > 5


def test_cli(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "docs.txt"
    path.write_text(f"{EIFFEL}\n---\n{CURIE}")
    code = main(
        [
            "compress",
            "-m",
            "self-information",
            "--rate",
            "0.4",
            "-o",
            "unit=word",
            "--json",
            str(path),
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["texts"]) == 2 and out["tokens_out"] <= int(0.4 * out["tokens_in"])


def test_window_never_exceeds_the_model_positions(tmp_path: Any) -> None:
    """A tiny GPT-2 (64 positions, random weights) fails on any longer forward pass."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer(SMOLLM)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    c = get_compressor("self-information", model=str(tmp_path), window=4096, overlap=16)
    text = " ".join([EIFFEL, CURIE, AMAZON])
    [(_, values)] = c.token_surprisal([text], ["How tall?"])
    assert len(values) > 128 and all(v > 0 for v in values)
    result = c.compress([text], "How tall?", Budget(rate=0.5))
    assert 0 < result.tokens_out <= int(0.5 * result.tokens_in)
