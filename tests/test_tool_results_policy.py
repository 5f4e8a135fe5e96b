"""The tool-result policy (library level) and the originals store."""

from __future__ import annotations

import time

import pytest

from ctxzip.middleware.agent_items import tool_slots
from ctxzip.middleware.messages import MessagePolicy, plan_request
from ctxzip.middleware.originals import OriginalsStore
from ctxzip.middleware.tool_results import ToolResultPolicy, plan_tool_results


def words(text: str) -> int:
    return len(text.split())


def openai_body() -> dict:
    return {"model": "m", "messages": [
        {"role": "user", "content": "first question about alpha"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "grep", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "x " * 500},
        {"role": "user", "content": "second question about beta"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "b", "type": "function", "function": {"name": "read", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "y " * 500}]},
    ]}  # fmt: skip


def test_query_is_the_last_user_text_before_the_call():
    plan = plan_tool_results(openai_body(), "openai", ToolResultPolicy(min_tokens=10), words)
    assert [u.query for u in plan.units] == ["first question about alpha",
                                             "second question about beta"]  # fmt: skip
    assert [u.slot.tool for u in plan.units] == ["grep", "read"]
    body = plan.apply(["short a", "short b"])
    assert body["messages"][2]["content"] == "short a"
    assert body["messages"][5]["content"][0]["text"] == "short b"
    assert openai_body()["messages"][2]["content"] == "x " * 500  # the input is untouched


def test_include_exclude_threshold_and_off():
    body = openai_body()
    plan = plan_tool_results(body, "openai", ToolResultPolicy(min_tokens=10, include=("gr*",)),
                             words)  # fmt: skip
    assert [u.slot.tool for u in plan.units] == ["grep"] and plan.skipped == {"excluded": 1}
    plan = plan_tool_results(body, "openai", ToolResultPolicy(min_tokens=10, exclude=("grep",)),
                             words)  # fmt: skip
    assert [u.slot.tool for u in plan.units] == ["read"]
    plan = plan_tool_results(body, "openai", ToolResultPolicy(min_tokens=10_000), words)
    assert not plan.units and plan.skipped == {"below_threshold": 2}
    plan = plan_tool_results(body, "openai", ToolResultPolicy(enabled=False), words)
    assert not plan.units and plan.skipped == {"disabled": 2}


def test_responses_and_anthropic_slots():
    responses = {"input": [
        {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
        {"type": "function_call", "call_id": "c", "name": "ls", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "out"},
    ]}  # fmt: skip
    [slot] = tool_slots(responses, "responses")
    assert (slot.tool, slot.text, slot.call_index) == ("ls", "out", 1)
    anthropic = {"messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "sh",
                                           "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": "a"},
            {"type": "tool_result", "tool_use_id": "t",
             "content": [{"type": "text", "text": "b"}, {"type": "image", "source": {}}]}]},
    ]}  # fmt: skip
    assert [s.text for s in tool_slots(anthropic, "anthropic")] == ["a", "b"]


def test_message_query_never_comes_from_a_later_message():
    body = {"messages": [
        {"role": "user", "content": "early context " * 50},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "later question " * 50},
    ]}  # fmt: skip
    plan = plan_request(body, "openai", MessagePolicy(min_tokens=10), words)
    assert [u.query for u in plan.active] == [body["messages"][0]["content"].strip(),
                                              body["messages"][2]["content"].strip()]  # fmt: skip


def test_originals_store_ttl_cap_and_keys(tmp_path):
    store = OriginalsStore(tmp_path / "o.sqlite3", ttl_s=0.2, max_bytes=1000)
    store.put({"aaaaaaaaaaaa": "x" * 600})
    assert store.get("aaaaaaaaaaaa") == "x" * 600
    store.put({"bbbbbbbbbbbb": "y" * 600})  # over the cap: the oldest row goes
    assert store.get("aaaaaaaaaaaa") is None and store.get("bbbbbbbbbbbb") == "y" * 600
    assert store.get("../etc/passwd") is None  # only marker keys are looked up
    time.sleep(0.3)
    assert store.get("bbbbbbbbbbbb") is None  # expired
    store.close()
    again = OriginalsStore(tmp_path / "o.sqlite3")  # a file store survives a restart
    assert len(again) == 1
    with pytest.raises(ValueError):
        OriginalsStore(ttl_s=0)
