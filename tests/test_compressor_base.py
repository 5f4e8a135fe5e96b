import asyncio

import pytest

from ctxzip import Budget, CompressionRequest, InputError, get_compressor

DOCS = [
    "Marie Curie was born in Warsaw in 1867. She won two Nobel Prizes. " * 4,
    "The Seine flows through Paris. " * 3,
    "",
]


@pytest.mark.parametrize("budget", [Budget(rate=0.3), Budget(rate=0.5), Budget(target_tokens=17)])
@pytest.mark.parametrize(
    "tokenizer", ["gpt-4o", "gpt-3.5-turbo", "sentence-transformers/all-MiniLM-L6-v2"]
)
def test_truncate_meets_budget(budget, tokenizer):
    c = get_compressor("truncate", tokenizer=tokenizer)
    r = c.compress(DOCS, budget=budget)
    assert len(r.texts) == len(DOCS) and r.texts[2] == ""
    assert r.tokens_out <= budget.tokens_for(r.tokens_in)
    assert r.tokens_out >= budget.tokens_for(r.tokens_in) - len(DOCS) * 2  # nearly full
    for doc, text, spans in zip(DOCS, r.texts, r.kept, strict=False):
        assert doc.startswith(text)
        assert all(doc[s:e] for s, e in spans)
    assert r.rate == r.tokens_out / r.tokens_in and r.method == "truncate"


def test_noop_keeps_everything_and_reports():
    r = get_compressor("noop").compress(
        DOCS, query="Where was Curie born?", budget=Budget(rate=0.1)
    )
    assert r.texts == DOCS and r.ratio == 1.0 and r.rate == 1.0
    assert r.requested_rate == pytest.approx(0.1, abs=0.01)
    d = r.to_dict()
    assert d["tokens_in"] == r.tokens_in and d["kept"][0] == [[0, len(DOCS[0])]]


def test_batch_matches_single_calls():
    c = get_compressor("truncate")
    reqs = [CompressionRequest.of(DOCS[:2], budget=Budget(rate=r)) for r in (0.2, 0.6)]
    batch = c.compress_batch(reqs)
    singles = [c.compress(DOCS[:2], budget=Budget(rate=r)) for r in (0.2, 0.6)]
    assert [b.texts for b in batch] == [s.texts for s in singles]


async def test_acompress_runs_off_the_loop():
    c = get_compressor("truncate")
    results = await asyncio.gather(*(c.acompress(DOCS, budget=Budget(rate=0.5)) for _ in range(3)))
    assert all(r.texts == results[0].texts for r in results)


@pytest.mark.parametrize(
    ("contexts", "message"),
    [
        (42, "must be a string or a list"),
        (["ok", 3], "context 1 must be a string"),
        ([b"\xff\xfe bad"], "not valid UTF-8"),
        (["lone \udc80 surrogate"], "invalid character"),
    ],
)
def test_bad_input_is_a_clear_error(contexts, message):
    with pytest.raises(InputError, match=message):
        get_compressor("truncate").compress(contexts, budget=Budget(rate=0.5))


def test_budget_type_checked():
    with pytest.raises(InputError, match="budget must be"):
        get_compressor("truncate").compress("text", budget=0.5)  # type: ignore[arg-type]


def test_cjk_truncation_never_splits_a_character():
    text = "東京は日本の首都です。人口は約1400万人です。" * 5
    r = get_compressor("truncate").compress(text, budget=Budget(rate=0.33))
    assert text.startswith(r.texts[0]) and r.tokens_out <= Budget(rate=0.33).tokens_for(r.tokens_in)
