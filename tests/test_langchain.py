"""ctxzip inside real LangChain: retrievers over real vector stores, LCEL, embeddings."""

from __future__ import annotations

import asyncio
import re
from pydoc_data.topics import topics

import numpy as np
import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.vectorstores import InMemoryVectorStore

from ctxzip import Budget
from ctxzip.middleware.langchain import (
    METADATA_KEY,
    CtxzipDocumentCompressor,
    CtxzipEmbeddings,
    compression_runnable,
)
from ctxzip.tokens import count_tokens

pytestmark = pytest.mark.slow

TOPICS = ["while", "for", "break", "continue", "del", "global", "lambda", "return", "pass"]
QUESTION = "Which exception is raised when deleting a name that is unbound?"


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def embeddings() -> CtxzipEmbeddings:
    return CtxzipEmbeddings()


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    return [
        Document(page_content=topics[t], metadata={"topic": t, "source": "pydoc"}, id=t)
        for t in TOPICS
    ]


@pytest.fixture(scope="module")
def retriever(embeddings: CtxzipEmbeddings, docs: list[Document]) -> ContextualCompressionRetriever:
    store = InMemoryVectorStore.from_documents(docs, embeddings)
    return ContextualCompressionRetriever(
        base_compressor=CtxzipDocumentCompressor(method="extractive", rate=0.25),
        base_retriever=store.as_retriever(search_kwargs={"k": 4}),
    )


def _check(out: list[Document], docs: list[Document]) -> None:
    assert out, "nothing retrieved"
    by_id = {d.id: d for d in docs}
    total_in = total_out = 0
    for d in out:
        original = by_id[d.id]
        assert d.metadata["topic"] == original.metadata["topic"]
        assert d.metadata["source"] == "pydoc"
        stats = d.metadata[METADATA_KEY]
        assert stats["method"] == "extractive" and stats["budget"] == "rate=0.25"
        assert stats["tokens_out"] == count_tokens(d.page_content) > 0
        assert stats["tokens_in"] == count_tokens(original.page_content)
        assert len(d.page_content) < len(original.page_content)
        total_in, total_out = stats["request_tokens_in"], stats["request_tokens_out"]
    assert total_out <= Budget(rate=0.25).tokens_for(total_in)  # budget met across documents
    assert any("NameError" in d.page_content for d in out)


def test_retriever_end_to_end_sync(
    retriever: ContextualCompressionRetriever, docs: list[Document]
) -> None:
    _check(list(retriever.invoke(QUESTION)), docs)


async def test_retriever_end_to_end_async(
    retriever: ContextualCompressionRetriever, docs: list[Document]
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    retriever.base_compressor.get_compressor().encoder.clear_cache()  # type: ignore[attr-defined]
    out = await retriever.ainvoke(QUESTION)
    task.cancel()
    _check(list(out), docs)
    assert ticks > 3  # the event loop kept running while the model worked


def test_retriever_over_faiss(embeddings: CtxzipEmbeddings, docs: list[Document]) -> None:
    from langchain_community.vectorstores import FAISS

    store = FAISS.from_documents(docs, embeddings)
    retriever = ContextualCompressionRetriever(
        base_compressor=CtxzipDocumentCompressor(rate=0.25, options={"mmr": 0.3}),
        base_retriever=store.as_retriever(search_kwargs={"k": 3}),
    )
    out = retriever.invoke("What does the lambda expression create?")
    assert out and any("anonymous functions" in norm(d.page_content) for d in out)


def test_empty_results_are_dropped(docs: list[Document]) -> None:
    comp = CtxzipDocumentCompressor(rate=0.3)
    # selective augmentation: an unrelated question sends no context at all
    assert comp.compress_documents(docs[:3], "Who painted the Mona Lisa?") == []
    blank = [Document(page_content="   "), docs[4]]
    out = comp.compress_documents(blank, QUESTION)
    assert [d.id for d in out] == ["del"]
    assert comp.compress_documents([], QUESTION) == []


def test_any_registered_method_by_name(docs: list[Document]) -> None:
    comp = CtxzipDocumentCompressor(method="truncate", target_tokens=120)
    out = comp.compress_documents(docs[:3], "ignored")
    assert sum(count_tokens(d.page_content) for d in out) <= 120
    assert all(docs[i].page_content.startswith(d.page_content) for i, d in enumerate(out))
    assert all(d.metadata[METADATA_KEY]["method"] == "truncate" for d in out)


def test_bad_budget_fails_at_construction() -> None:
    with pytest.raises(ValueError):
        CtxzipDocumentCompressor(rate=1.5)
    with pytest.raises(ValueError):
        CtxzipDocumentCompressor(rate=0.5, target_tokens=100)


def test_runnable_compresses_a_prompt_string() -> None:
    run = compression_runnable(rate=0.3, query="What does pass do?")
    text = topics["pass"] + "\n\n" + topics["lambda"]
    out = run.invoke(text)
    assert isinstance(out, str) and 0 < count_tokens(out) <= int(0.3 * count_tokens(text))
    assert run.invoke("   ") == "   "


async def test_runnable_compresses_only_allowed_messages() -> None:
    system = SystemMessage("You are a careful assistant. " + topics["pass"])
    tool_call = AIMessage("", tool_calls=[{"name": "lookup", "args": {"q": "del"}, "id": "c1"}])
    tool = ToolMessage(topics["del"], tool_call_id="c1")
    short = HumanMessage("Thanks!")
    long = HumanMessage("Background:\n" + topics["global"] + "\n" + topics["nonlocal"])
    question = HumanMessage("Which statement declares globals for the whole code block?")
    messages = [system, tool_call, tool, short, long, question]
    run = compression_runnable(rate=0.3)
    for out in (run.invoke(messages), await run.ainvoke(messages)):
        assert out[0] is system and out[1] is tool_call and out[2] is tool and out[3] is short
        assert out[5] is question  # short: under the policy's min_tokens
        assert len(out[4].content) < len(long.content)
        assert out[4].response_metadata[METADATA_KEY]["method"] == "extractive"
        assert "global" in out[4].content


def test_runnable_never_empties_a_message() -> None:
    background = HumanMessage("Background:\n" + topics["global"])
    question = HumanMessage("Who painted the Mona Lisa?")  # unrelated: augmentation skips
    out = compression_runnable(rate=0.3).invoke([background, question])
    assert out[0].content == background.content and out[1] is question
    stats = out[0].response_metadata[METADATA_KEY]
    assert stats["unchanged"] and "selective augmentation" in stats["reason"]


def test_runnable_in_an_lcel_chain() -> None:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context."), ("human", "{context}\n\nQuestion: {question}")]
    )
    chain = prompt | compression_runnable(rate=0.4)
    context = topics["return"] + "\n\n" + topics["yield"]
    out = chain.invoke({"context": context, "question": "What does return do in a generator?"})
    assert out[0].content == "Answer from the context."
    assert count_tokens(out[1].content) < count_tokens(context)
    # the question is the message's last paragraph: it ranks first and stays, and so
    # does the sentence that answers it
    assert "Question: What does return do in a generator?" in out[1].content
    assert "StopIteration" in out[1].content


def test_runnable_rejects_other_input() -> None:
    with pytest.raises(TypeError, match="string, a PromptValue or a list of messages"):
        compression_runnable(method="truncate", rate=0.5).invoke({"not": "messages"})


def test_embeddings_adapter(embeddings: CtxzipEmbeddings) -> None:
    vecs = np.array(embeddings.embed_documents(["a cat sat on the mat", "stock market news"]))
    q = np.array(embeddings.embed_query("where did the cat sit?"))
    assert vecs.shape == (2, 384) and q.shape == (384,)
    assert abs(float(np.linalg.norm(q)) - 1.0) < 1e-4
    assert q @ vecs[0] > q @ vecs[1]
    again = asyncio.run(embeddings.aembed_documents(["a cat sat on the mat"]))
    assert np.allclose(again[0], vecs[0], atol=1e-6)
