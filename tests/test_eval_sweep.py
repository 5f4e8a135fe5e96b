"""Sweeps end to end: the real local reader, resuming, outputs and plot, the HTTP reader."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ctxzip.chat_client import ChatClient
from ctxzip.cli import main
from ctxzip.compressors.reader_prompt import user_prompt
from ctxzip.errors import CtxzipError
from ctxzip.evals import datasets, report
from ctxzip.evals.cache import file_stamps
from ctxzip.evals.metrics import answer_retained
from ctxzip.evals.plot import plot_sweep
from ctxzip.evals.readers import Answer, LocalReader, OpenAIReader
from ctxzip.evals.sweep import SweepConfig, run_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reader() -> LocalReader:
    return LocalReader(max_new_tokens=8, batch_size=4)


@pytest.fixture(scope="module")
def items() -> list[datasets.QAItem]:
    return datasets.load_dataset("pyref")[:2]


def _quiet(_: str) -> None:
    pass


@pytest.mark.slow
def test_sweep_with_the_real_reader(tmp_path: Path, reader: LocalReader, items: Any) -> None:
    config = SweepConfig(methods=["truncate"], rates=[0.3], out=str(tmp_path))
    records, failed, _ = run_sweep(config, items, reader, progress=False, log=_quiet)
    assert not failed
    by = {(r["method"], r["id"]): r for r in records}
    assert {m for m, _ in by} == {"no-context", "full", "truncate", "random"}
    for it in items:
        assert by[("full", it.id)]["retained"] == 1.0
        assert by[("no-context", it.id)]["tokens_out"] == 0
        t = by[("truncate", it.id)]
        assert t["achieved_rate"] <= 0.3 + 1e-9 and t["tokenizer"] == reader.tokenizer
        assert isinstance(t["prediction"], str) and t["reader_seconds"] > 0
    rows = report.summarize(records)
    paths = report.write_outputs(tmp_path, records, rows, {"dataset": "pyref", "n_items": 2})
    table = paths["table"].read_text()
    assert "| truncate | 0.3 | 2 |" in table and "F1 by context length" in table
    assert len(paths["items"].read_text().splitlines()) == len(records)
    summary = json.loads(paths["summary"].read_text())
    assert {r["method"] for r in summary["rows"]} == {"no-context", "full", "truncate", "random"}
    png = plot_sweep(rows, tmp_path / "plot.png")
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    import matplotlib.image

    assert matplotlib.image.imread(str(png)).shape[2] in (3, 4)  # decodes as an image


class _Interrupting:
    """Wraps a reader and stops the run after `allow` answers, as Ctrl-C would."""

    def __init__(self, inner: Any, allow: int | None) -> None:
        self.inner, self.allow, self.asked = inner, allow, 0
        self.name, self.tokenizer = inner.name, inner.tokenizer

    def config(self) -> dict[str, Any]:
        return self.inner.config()

    def answer(self, questions: Sequence[str], contexts: Sequence[str]) -> list[Answer]:
        if self.allow is not None and self.asked >= self.allow:
            raise KeyboardInterrupt
        self.asked += len(questions)
        return self.inner.answer(questions, contexts)


@pytest.mark.slow
def test_resume_after_interruption(tmp_path: Path, reader: LocalReader, items: Any) -> None:
    config = SweepConfig(
        methods=["truncate"], rates=[0.5, 0.2], out=str(tmp_path), baselines=False, read_chunk=2
    )
    first = _Interrupting(reader, allow=2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, items, first, progress=False, log=_quiet)
    assert first.asked == 2
    cached = (tmp_path / "cache" / "answers.jsonl").read_text().splitlines()
    assert len(cached) == 2
    second = _Interrupting(reader, allow=None)
    records, _, _ = run_sweep(config, items, second, progress=False, log=_quiet)
    assert second.asked == 2  # only the two prompts the first run did not finish
    assert len(records) == 4
    third = _Interrupting(reader, allow=0)  # everything cached: the reader is never asked
    again, _, _ = run_sweep(config, items, third, progress=False, log=_quiet)
    assert [r["prediction"] for r in again] == [r["prediction"] for r in records]


class _OracleUpstream(BaseHTTPRequestHandler):
    """An OpenAI-protocol server on loopback that answers when the context holds the gold."""

    golds: ClassVar[dict[str, list[str]]] = {}
    seen_auth: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen_auth.append(self.headers.get("authorization", ""))
        user = body["messages"][-1]["content"]
        question = user.rsplit("Question: ", 1)[1].split("\nAnswer:")[0]
        context = user.rsplit("Question: ", 1)[0]
        answer = next((g for g in self.golds[question] if answer_retained(context, [g])), "unknown")
        out = json.dumps(
            {
                "choices": [{"message": {"role": "assistant", "content": answer}}],
                "usage": {"prompt_tokens": len(user) // 4, "completion_tokens": 3},
            }
        )
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OracleUpstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_cli_with_openai_compatible_reader(
    tmp_path: Path,
    upstream: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    all_items = datasets.load_dataset("pyref")
    _OracleUpstream.golds = {it.question: it.answers for it in all_items}
    monkeypatch.setenv("EVAL_TEST_KEY", "sk-test-secret")
    config = tmp_path / "eval.yaml"
    config.write_text("rates: [0.5, 0.2]\nlimit: 12\nseed: 7\n")
    out = tmp_path / "run"
    code = main(
        [
            "eval",
            "--dataset",
            "pyref",
            "--methods",
            "truncate",
            "--reader",
            "openai:gpt-4o-mini",
            "--reader-url",
            upstream,
            "--reader-key-env",
            "EVAL_TEST_KEY",
            "--config",
            str(config),
            "--limit",
            "10",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert f"table: {out / 'table.md'}" in printed and f"plot:  {out / 'plot.png'}" in printed
    assert _OracleUpstream.seen_auth[-1] == "Bearer sk-test-secret"
    assert "sk-test-secret" not in "".join(p.read_text() for p in out.rglob("*.json*"))
    rows = {
        (r["method"], r["rate"]): r for r in json.loads((out / "summary.json").read_text())["rows"]
    }
    assert rows[("full", None)]["n"] == 10  # the flag beats the config file's limit
    assert rows[("full", None)]["em"] == 1.0 and rows[("no-context", None)]["em"] == 0.0
    for r in rows.values():  # an oracle reader answers exactly when the answer survived
        assert r["acc"] == pytest.approx(r["retention"])
    assert rows[("truncate", 0.2)]["achieved_rate"] <= 0.2
    assert rows[("truncate", 0.2)]["tokenizer"].startswith("o200k_base")
    assert (out / "plot.png").read_bytes().startswith(PNG_MAGIC)
    header = (out / "summary.csv").read_text().splitlines()[0]
    assert header.startswith("method,rate,n,em,em_lo,em_hi,f1")


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--rates", "0.5,abc", "--reader", "openai:x"]) == 2
    assert (
        main(
            [
                "eval",
                "--methods",
                "no-such-method",
                "--reader",
                "openai:x",
                "--reader-url",
                "http://127.0.0.1:9/v1",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # fails before loading anything
    assert "--rates" in err and "unknown method 'no-such-method'" in err


def test_prompt_template_is_fixed() -> None:
    assert user_prompt("Q?", "") == "Question: Q?\nAnswer:"
    assert user_prompt("Q?", "ctx") == "Context:\nctx\n\nQuestion: Q?\nAnswer:"


def test_openai_reader_reports_unreachable_endpoint() -> None:
    reader = OpenAIReader("m", base_url="http://127.0.0.1:9/v1", retries=0, timeout=2)
    with pytest.raises(CtxzipError, match="unreachable"):
        reader.answer(["Q?"], ["a"])


def test_cache_key_sees_files_behind_options(tmp_path: Path) -> None:
    # replacing a projector at the same path must not reuse answers made with the old one
    prefix = tmp_path / "best"
    options = {"projector": str(prefix), "k": 2, "model": "gpt-4o"}
    assert file_stamps(options) == []
    (tmp_path / "best.safetensors").write_bytes(b"one")
    first = file_stamps(options)
    assert [s[1] for s in first] == [str(tmp_path / "best.safetensors")]
    (tmp_path / "best.safetensors").write_bytes(b"three")
    assert file_stamps(options) != first
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    assert len(file_stamps({"model": str(folder)})) == 1


class _Flaky(BaseHTTPRequestHandler):
    """A chat endpoint on loopback that answers with the next status of a script (then 200)."""

    script: ClassVar[list[int]] = []
    seen: ClassVar[list[tuple[str, str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append((self.path, self.headers.get("authorization", ""), body))
        status = self.script.pop(0) if self.script else 200
        if status == 200:
            payload = {
                "choices": [{"message": {"role": "assistant", "content": "Answer: 1887"}}],
                "usage": {"prompt_tokens": 42, "completion_tokens": 3},
            }
        else:
            payload = {"error": {"message": "overloaded, try again"}}
        out = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    _Flaky.script, _Flaky.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_chat_client_retries_a_503_then_answers(flaky: str) -> None:
    _Flaky.script = [503]
    client = ChatClient(flaky, api_key="sk-test-secret", retries=2, backoff=0.01)
    try:
        reply = client.complete({"model": "m", "messages": [{"role": "user", "content": "Q?"}]})
    finally:
        client.close()
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("Answer: 1887", 42, 3)
    assert reply.seconds > 0
    assert len(_Flaky.seen) == 2  # the 503, then the retry that was answered
    assert all(path == "/v1/chat/completions" for path, _, _ in _Flaky.seen)
    assert all(auth == "Bearer sk-test-secret" for _, auth, _ in _Flaky.seen)
    assert _Flaky.seen[0][2] == _Flaky.seen[1][2]  # the same request, resent


def test_chat_client_stops_after_its_retries_and_never_retries_a_400(flaky: str) -> None:
    client = ChatClient(flaky, api_key="sk-test-secret", retries=1, backoff=0.01)
    _Flaky.script = [503, 429, 200]
    with pytest.raises(CtxzipError, match="HTTP 429") as info:
        client.complete({"model": "m", "messages": []})
    assert len(_Flaky.seen) == 2 and "sk-test-secret" not in str(info.value)
    _Flaky.script, _Flaky.seen = [400], []
    with pytest.raises(CtxzipError, match="HTTP 400"):
        client.complete({"model": "m", "messages": []})
    assert len(_Flaky.seen) == 1
    client.close()


def test_openai_reader_retries_through_the_client(flaky: str) -> None:
    _Flaky.script = [502, 503]
    reader = OpenAIReader("gpt-4o-mini", base_url=flaky, retries=2)
    reader.client.backoff = 0.01
    [answer] = reader.answer(["When?"], ["It was built from 1887 to 1889."])
    assert (answer.text, answer.prompt_tokens, answer.answer_tokens) == ("1887", 42, 3)
    assert len(_Flaky.seen) == 3
    body = _Flaky.seen[-1][2]
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0
    assert body["max_tokens"] == reader.max_new_tokens
