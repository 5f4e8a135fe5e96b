"""The abstractive compressor with real models: SmolLM2 (causal), a tiny T5 (seq2seq, random
weights built from a config), and an OpenAI-compatible server on loopback (remote)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ctxzip.budget import Budget
from ctxzip.cli import main
from ctxzip.errors import CtxzipError
from ctxzip.models import SMOLLM, load_tokenizer
from ctxzip.registry import get_compressor
from ctxzip.result import CompressionRequest

pytestmark = pytest.mark.slow

EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower "
    "from 1887 to 1889. The tower is 330 metres tall, about the same height as an 81-storey "
    "building."
)
LOUVRE = "The Louvre is the world's most-visited museum and a historic landmark in Paris."
CURIE = (
    "Marie Curie was a Polish and naturalised-French physicist and chemist who conducted "
    "pioneering research on radioactivity. She shared the 1903 Nobel Prize in Physics with Pierre "
    "Curie and Henri Becquerel. She won the Nobel Prize in Chemistry in 1911 for the discovery of "
    "polonium and radium."
)
KILIMANJARO = (
    "Mount Kilimanjaro is a dormant volcano in Tanzania. It has three volcanic cones: Kibo, "
    "Mawenzi, and Shira. It is the highest mountain in Africa, about 5,895 metres above sea level."
)
CASES = [
    ("How tall is the Eiffel Tower?", "330", [EIFFEL, LOUVRE]),
    ("In which year did Marie Curie win the Nobel Prize in Chemistry?", "1911", [CURIE]),
    ("In which country is Mount Kilimanjaro?", "Tanzania", [KILIMANJARO]),
]


# -- the local chat LM (SmolLM2-135M-Instruct) -------------------------------------------------


@pytest.fixture(scope="module")
def causal() -> Any:
    return get_compressor("abstractive")


@pytest.fixture(scope="module")
def causal_results(causal: Any) -> list[Any]:
    """One batched call over every case (generation is the slow part: do it once)."""
    requests = [CompressionRequest.of(docs, q, Budget(rate=0.5)) for q, _, docs in CASES]
    return causal.compress_batch(requests)


def test_answer_survives_at_half_rate(causal_results: list[Any]) -> None:
    for (question, answer, _), result in zip(CASES, causal_results, strict=True):
        assert answer in result.text, (question, result.text, result.extra)
        assert result.method == "abstractive"
        assert result.kept == [[] for _ in result.texts]  # nothing is kept verbatim


def test_summary_within_budget_and_generation_cap(causal: Any, causal_results: list[Any]) -> None:
    model_tokens = causal.backend.count
    for result in causal_results:
        summary = result.extra["summaries"][0]
        assert result.tokens_out <= summary["budget_tokens"] == int(0.5 * result.tokens_in)
        assert model_tokens(result.text) <= summary["generation_cap_tokens"]
        assert summary["faithfulness"]["checked"] >= 1  # the guard ran (on by default locally)


def test_target_tokens_sets_a_short_summary(causal: Any) -> None:
    result = causal.compress(
        [CURIE], "When did Marie Curie win the chemistry prize?", Budget(target_tokens=6)
    )
    assert result.tokens_out <= 6
    assert result.extra["summaries"][0]["generation_cap_tokens"] <= 8


def test_selective_augmentation_on_unrelated_query(causal: Any) -> None:
    result = causal.compress([EIFFEL, LOUVRE], "What is the boiling point of ethanol?")
    assert result.texts == ["", ""] and result.tokens_out == 0
    assert "irrelevant" in (result.reason or "")
    related = causal.checker.relevance([("How tall is the Eiffel Tower?", [EIFFEL])])[0]
    assert related > causal.relevance_threshold


def test_empty_contexts_give_an_empty_result(causal: Any) -> None:
    result = causal.compress(["", "   "], "anything?")
    assert result.texts == ["", ""] and result.tokens_out == 0
    assert result.extra["summaries"] == []  # nothing was sent to the model


def test_bad_options_are_clear() -> None:
    with pytest.raises(CtxzipError, match="backend"):
        get_compressor("abstractive", backend="nope")
    with pytest.raises(CtxzipError, match="mode"):
        get_compressor("abstractive", mode="sometimes")


# -- the faithfulness guard ---------------------------------------------------------------------


def test_guard_drops_injected_sentences(causal: Any) -> None:
    summary = (
        "The Eiffel Tower is 330 metres tall. It was designed by Gustave Eiffel's company. "
        "The tower was moved to Berlin in 1999. Its elevators are powered by solar panels."
    )
    [result] = causal.checker.filter([(summary, [EIFFEL, LOUVRE])])
    assert result.checked == 4
    assert result.dropped == [
        "The tower was moved to Berlin in 1999.",
        "Its elevators are powered by solar panels.",
    ]
    assert "330 metres" in result.text and "Gustave Eiffel" in result.text


def test_guard_refuses_numbers_the_sources_never_state(causal: Any) -> None:
    [result] = causal.checker.filter([("The tower is 300 metres tall.", [EIFFEL])])
    assert result.text == "" and len(result.dropped) == 1


# -- a seq2seq model (tiny T5, random weights: mechanics, not quality) -----------------------


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> str:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = load_tokenizer(SMOLLM)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_seq2seq_backend_generates_within_the_cap(tiny_t5: str) -> None:
    comp = get_compressor(
        "abstractive",
        backend="seq2seq",
        model=tiny_t5,
        faithfulness=False,
        relevance_threshold=None,
    )
    requests = [CompressionRequest.of(docs, q, Budget(target_tokens=12)) for q, _, docs in CASES]
    results = comp.compress_batch(requests)
    for result in results:
        summary = result.extra["summaries"][0]
        assert result.extra["backend"] == "seq2seq"
        assert result.text  # random weights still write something
        assert comp.backend.count(result.text) <= summary["generation_cap_tokens"]
        assert result.tokens_out <= 12
        assert summary["input_truncated"] is False


def test_seq2seq_cuts_long_input_to_the_window(tiny_t5: str) -> None:
    comp = get_compressor(
        "abstractive",
        backend="seq2seq",
        model=tiny_t5,
        faithfulness=False,
        relevance_threshold=None,
        max_input_tokens=64,
    )
    result = comp.compress([EIFFEL * 5, CURIE * 5], "How tall?", Budget(target_tokens=8))
    assert result.extra["summaries"][0]["input_truncated"] is True
    assert result.tokens_out <= 8


def test_seq2seq_guard_drops_random_text(tiny_t5: str) -> None:
    comp = get_compressor("abstractive", backend="seq2seq", model=tiny_t5, relevance_threshold=None)
    result = comp.compress([EIFFEL], "How tall is the tower?", Budget(target_tokens=20))
    assert result.texts == [""]
    assert "unsupported" in (result.reason or "")
    assert result.extra["faithfulness_dropped"] >= 1


# -- an OpenAI-compatible endpoint on loopback ---------------------------------------------------


class ChatServer:
    """A minimal /v1/chat/completions server that records requests and answers by script."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.answer: Any = "The Eiffel Tower is 330 metres tall."
        self.status = 200

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            if self.status != 200:
                return JSONResponse({"error": {"message": "upstream broke"}}, self.status)
            text = self.answer(body) if callable(self.answer) else self.answer
            return JSONResponse(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text},
                        }
                    ],
                }
            )

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def chat_server() -> Iterator[tuple[ChatServer, str]]:
    import uvicorn

    fake = ChatServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(fake.app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    yield fake, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(5)
    sock.close()


@pytest.fixture()
def remote(chat_server: tuple[ChatServer, str]) -> Iterator[tuple[ChatServer, Any]]:
    fake, url = chat_server
    fake.requests.clear()
    fake.headers.clear()
    fake.answer, fake.status = "The Eiffel Tower is 330 metres tall.", 200
    comp = get_compressor(
        "abstractive",
        backend="openai",
        model="gpt-4o-mini",
        base_url=url,
        api_key="sk-test-secret",
        relevance_threshold=None,
    )
    yield fake, comp


def test_remote_backend_sends_the_budget_as_max_tokens(remote: tuple[ChatServer, Any]) -> None:
    fake, comp = remote
    result = comp.compress([EIFFEL, LOUVRE], "How tall is the Eiffel Tower?", Budget(rate=0.3))
    assert result.texts == ["The Eiffel Tower is 330 metres tall.", ""]
    [body] = fake.requests
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0
    assert body["max_tokens"] == result.extra["summaries"][0]["generation_cap_tokens"]
    assert body["max_tokens"] == int(0.3 * result.tokens_in)  # same tokenizer: ratio 1
    prompt = body["messages"][-1]["content"]
    assert (
        "How tall is the Eiffel Tower?" in prompt and "330 metres" in prompt and "Louvre" in prompt
    )
    assert fake.headers[0]["authorization"] == "Bearer sk-test-secret"
    assert result.extra["faithfulness_dropped"] is None  # off by default for remote backends
    assert "sk-test-secret" not in repr(comp)


def test_remote_no_information_answer_is_selective_augmentation(
    remote: tuple[ChatServer, Any],
) -> None:
    fake, comp = remote
    fake.answer = "NO RELEVANT INFORMATION"
    result = comp.compress([LOUVRE], "What is the boiling point of ethanol?")
    assert result.texts == [""] and result.tokens_out == 0
    assert "no relevant information" in (result.reason or "")


def test_remote_guard_when_asked(
    remote: tuple[ChatServer, Any], chat_server: tuple[ChatServer, str]
) -> None:
    fake, _ = remote
    comp = get_compressor(
        "abstractive",
        backend="openai",
        base_url=chat_server[1],
        api_key="k",
        faithfulness=True,
        relevance_threshold=None,
    )
    fake.answer = "The Eiffel Tower is 330 metres tall. The tower was moved to Berlin in 1999."
    result = comp.compress([EIFFEL], "How tall is it?", Budget(rate=0.6))
    assert result.texts == ["The Eiffel Tower is 330 metres tall."]
    assert result.extra["faithfulness_dropped"] == 1


def test_remote_summary_trimmed_to_budget(remote: tuple[ChatServer, Any]) -> None:
    fake, comp = remote
    fake.answer = EIFFEL  # ignores max_tokens: we still hold the budget, in whole sentences
    result = comp.compress([EIFFEL, CURIE], "Eiffel?", Budget(target_tokens=25))
    assert 0 < result.tokens_out <= 25
    assert result.text == EIFFEL.split(". ")[0] + "."


def test_remote_per_context_mode_batches_concurrently(
    remote: tuple[ChatServer, Any], chat_server: tuple[ChatServer, str]
) -> None:
    fake, _ = remote
    comp = get_compressor(
        "abstractive",
        backend="openai",
        base_url=chat_server[1],
        api_key="k",
        mode="per_context",
        relevance_threshold=None,
    )
    fake.answer = lambda body: body["messages"][-1]["content"].split("[1] ")[1].split(".")[0] + "."
    requests = [
        CompressionRequest.of([EIFFEL, CURIE], "Who?", Budget(rate=0.5)),
        CompressionRequest.of([KILIMANJARO], "Where?", Budget(rate=0.5)),
    ]
    first, second = comp.compress_batch(requests)
    assert len(fake.requests) == 3
    assert first.texts[0].startswith("The Eiffel Tower") and first.texts[1].startswith("Marie")
    assert second.texts == ["Mount Kilimanjaro is a dormant volcano in Tanzania."]
    caps = [s["budget_tokens"] for s in first.extra["summaries"]]
    assert sum(caps) <= int(0.5 * first.tokens_in)


def test_remote_errors_are_one_clear_line_without_the_key(remote: tuple[ChatServer, Any]) -> None:
    fake, comp = remote
    fake.status = 400
    with pytest.raises(CtxzipError, match="HTTP 400") as info:
        comp.compress([EIFFEL], "How tall?")
    assert "sk-test-secret" not in str(info.value)


def test_remote_unreachable_endpoint() -> None:
    comp = get_compressor(
        "abstractive",
        backend="openai",
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        relevance_threshold=None,
        timeout=2.0,
    )
    comp.backend.retries = 0
    with pytest.raises(CtxzipError, match="failed"):
        comp.compress([EIFFEL], "How tall?")


async def test_acompress_keeps_the_event_loop_free(remote: tuple[ChatServer, Any]) -> None:
    _fake, comp = remote
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    result = await comp.acompress([EIFFEL], "How tall is the Eiffel Tower?", Budget(rate=0.5))
    task.cancel()
    assert result.text == "The Eiffel Tower is 330 metres tall."
    assert ticks > 0


def test_cli_runs_the_remote_backend(
    chat_server: tuple[ChatServer, str], tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = chat_server
    fake.answer, fake.status = "The Eiffel Tower is 330 metres tall.", 200
    path = tmp_path / "doc.txt"
    path.write_text(EIFFEL)
    code = main(
        [
            "compress",
            "-m",
            "abstractive",
            "--rate",
            "0.5",
            "-q",
            "How tall?",
            "-o",
            "backend=openai",
            "-o",
            f"base_url={url}",
            "-o",
            "api_key=k",
            "-o",
            "relevance_threshold=null",
            "--json",
            str(path),
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert (
        out["texts"] == ["The Eiffel Tower is 330 metres tall."] and out["method"] == "abstractive"
    )


def test_langchain_component_by_name(chat_server: tuple[ChatServer, str]) -> None:
    from langchain_core.documents import Document

    from ctxzip.middleware.langchain import CtxzipDocumentCompressor

    fake, url = chat_server
    fake.answer, fake.status = "The Eiffel Tower is 330 metres tall.", 200
    lc = CtxzipDocumentCompressor(
        method="abstractive",
        rate=0.5,
        options={"backend": "openai", "base_url": url, "api_key": "k", "relevance_threshold": None},
    )
    docs = [Document(page_content=EIFFEL, id="a"), Document(page_content=LOUVRE, id="b")]
    out = lc.compress_documents(docs, "How tall is the Eiffel Tower?")
    assert [d.page_content for d in out] == ["The Eiffel Tower is 330 metres tall."]
    assert out[0].id == "a" and out[0].metadata["ctxzip"]["method"] == "abstractive"
