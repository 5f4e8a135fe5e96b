"""Provider-native context features pass through the proxy intact (real SDKs, local upstream):
Anthropic ``context_management`` with its beta header and ``compaction`` blocks, OpenAI
Responses ``compaction`` and ``reasoning`` items (``encrypted_content``), the
``/v1/responses/compact`` route and the ``prompt_cache_*`` fields; the proxy never adds a
fifth ``cache_control`` marker. (Gemini ``cachedContent`` and thought signatures:
tests/test_proxy_gemini.py.)"""

from __future__ import annotations

import copy
import json

import anthropic
import openai
import pytest
from gemini_fakes import GeminiUpstream
from test_proxy_fakes import LONG_CONTEXT, make_config, run_proxy, running_upstream
from test_responses_fakes import build_log, package_json

BETA = "context-management-2025-06-27"
EDITS = {"edits": [
    {"type": "clear_tool_uses_20250919", "trigger": {"type": "input_tokens", "value": 30000},
     "keep": {"type": "tool_uses", "value": 3}, "clear_at_least": {"type": "input_tokens",
                                                                  "value": 5000}},
    {"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 1}},
    {"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 150000}},
]}  # fmt: skip
COMPACTION = {"type": "compaction", "content": "Summary of the earlier turns: " + LONG_CONTEXT}
THINKING = {"type": "thinking", "thinking": "Let me look.", "signature": "EqQBCkYIBxgCKkD=="}
ENCRYPTED = "gAAAAABn" + "x" * 200 + "=="


@pytest.fixture(scope="module")
def upstream():
    with running_upstream(GeminiUpstream) as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(upstream):
    config = make_config(upstream.url, tool_results={"min_tokens": 200, "rate": 0.3,
                                                     "expand_tool": True})  # fmt: skip
    with run_proxy(config) as (url, _):
        yield url


@pytest.fixture(autouse=True)
def _reset(upstream):
    upstream.reset()


def _marked(n: int) -> dict:
    return {"type": "text", "text": f"block {n} " + LONG_CONTEXT,
            "cache_control": {"type": "ephemeral"}}  # fmt: skip


def anthropic_messages() -> list[dict]:
    return [
        {"role": "user", "content": [_marked(1), {"type": "text", "text": "What changed?"}]},
        {"role": "assistant", "content": [COMPACTION]},
        {"role": "user", "content": [_marked(2)]},
        {"role": "assistant", "content": [THINKING, {"type": "tool_use", "id": "tu_1",
                                                     "name": "pip_list", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1",
                                      "content": package_json()}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_2", "name": "logs",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_2",
                                      "content": build_log()}, _marked(3)]},
    ]  # fmt: skip


SYSTEM = [
    {"type": "text", "text": "Be terse. " + LONG_CONTEXT, "cache_control": {"type": "ephemeral"}}
]
TOOLS = [{"name": "pip_list", "description": "List.", "input_schema": {"type": "object"}},
         {"name": "logs", "description": "Logs.", "input_schema": {"type": "object"}}]  # fmt: skip


def test_anthropic_context_management_compaction_and_four_markers(proxy, upstream):
    client = anthropic.Anthropic(base_url=proxy, api_key="sk-ant-client-123", max_retries=0)
    messages = anthropic_messages()
    client.beta.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, system=copy.deepcopy(SYSTEM),
        messages=copy.deepcopy(messages), tools=TOOLS, betas=[BETA],
        context_management=copy.deepcopy(EDITS),
    )  # fmt: skip
    last = upstream.last
    sent = last["json"]
    assert BETA in last["headers"]["anthropic-beta"]
    assert sent["context_management"] == EDITS
    assert sent["system"] == SYSTEM and sent["messages"][1]["content"] == [COMPACTION]
    assert sent["messages"][3]["content"][0] == THINKING
    # everything up to the last breakpoint stays as sent (it is in the provider's cache)
    assert sent["messages"] == messages
    # four markers in, four out: the expand tool never brings a fifth
    assert json.dumps(sent).count('"cache_control"') == 4
    assert any(t.get("name") == "ctxzip_expand" for t in sent["tools"])


def test_anthropic_after_the_breakpoint_still_compresses(proxy, upstream):
    client = anthropic.Anthropic(base_url=proxy, api_key="sk-ant-client-123", max_retries=0)
    messages = anthropic_messages()
    messages[-1]["content"] = messages[-1]["content"][:1]  # no marker on the last turn
    client.beta.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                system=copy.deepcopy(SYSTEM), messages=copy.deepcopy(messages),
                                tools=TOOLS, betas=[BETA], context_management=EDITS)  # fmt: skip
    sent = upstream.last["json"]
    assert sent["messages"][:4] == messages[:4]  # up to the marker, and the signed thinking
    assert len(sent["messages"][4]["content"][0]["content"]) < len(package_json()) / 2
    assert len(sent["messages"][6]["content"][0]["content"]) < len(build_log()) / 2
    assert json.dumps(sent).count('"cache_control"') == 3


def responses_items() -> list[dict]:
    return [
        {"type": "compaction", "id": "cmp_1", "encrypted_content": ENCRYPTED},
        {"role": "user", "content": [{"type": "input_text", "text": LONG_CONTEXT + " Which?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": ENCRYPTED},
        {"type": "function_call", "call_id": "call_1", "name": "pip_list", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": package_json()},
    ]  # fmt: skip


CACHE_FIELDS = {"prompt_cache_key": "tenant-42/session-7", "prompt_cache_retention": "24h"}


def test_responses_compaction_reasoning_and_prompt_cache_fields(proxy, upstream):
    client = openai.OpenAI(base_url=proxy + "/v1", api_key="sk-client-key-123", max_retries=0)
    items = responses_items()
    client.responses.create(model="gpt-5.5", input=copy.deepcopy(items),
                            include=["reasoning.encrypted_content"], store=False,
                            prompt_cache_options={"ttl": "30m"}, **CACHE_FIELDS)  # fmt: skip
    sent = upstream.last["json"]
    assert sent["input"][0] == items[0] and sent["input"][2] == items[2]
    assert sent["input"][3] == items[3]
    assert {k: sent[k] for k in CACHE_FIELDS} == CACHE_FIELDS
    assert sent["prompt_cache_options"] == {"ttl": "30m"}
    assert len(sent["input"][4]["output"]) < len(package_json()) / 2  # still compressed


def test_responses_compact_route_is_passed_through_byte_for_byte(proxy, upstream):
    client = openai.OpenAI(base_url=proxy + "/v1", api_key="sk-client-key-123", max_retries=0)
    raw = client.responses.with_raw_response.compact(model="gpt-5.5", input=responses_items(),
                                                     instructions="Keep ids.")  # fmt: skip
    assert raw.http_response.status_code == 200
    last = upstream.last
    assert last["path"] == "/v1/responses/compact"
    assert last["json"]["input"] == responses_items()  # nothing compressed on this route
    assert raw.http_response.headers.get("x-ctxzip-compression") is None


def test_chat_prompt_cache_key_passes(proxy, upstream):
    client = openai.OpenAI(base_url=proxy + "/v1", api_key="sk-client-key-123", max_retries=0)
    client.chat.completions.create(model="gpt-5.5", prompt_cache_key="tenant-42",
                                   messages=[{"role": "user", "content": "hi"}],
                                   extra_body={"prompt_cache_retention": "24h"})  # fmt: skip
    sent = upstream.last["json"]
    assert sent["prompt_cache_key"] == "tenant-42" and sent["prompt_cache_retention"] == "24h"
