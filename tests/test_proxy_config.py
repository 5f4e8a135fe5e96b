"""Proxy configuration (TOML/YAML, environment, CLI) and the message policy on its own."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ctxzip.cli import cli
from ctxzip.compressors.truncate import TruncateCompressor
from ctxzip.middleware.messages import MessagePolicy, RateRange, compress_messages, plan_request
from ctxzip.proxy.config import ConfigError, load_config

TOML = """
[server]
port = 9999

[upstreams.openai]
url = "https://api.openai.com/v1"
api_key = "env:MY_OPENAI_KEY"

[upstreams.vllm]
url = "http://10.0.0.5:8000/v1"

[models]
"llama-*" = "vllm"

[compression]
method = "truncate"
tags = ["context"]
ranges = [{above = 500, rate = 0.6}, {above = 2000, rate = 0.3}]
"""

YAML = """
compression:
  method: noop
  roles: [user, assistant]
overrides:
  allow: [disable]
"""


def test_toml_with_env_secret_and_override(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(TOML)
    env = {"MY_OPENAI_KEY": "sk-secret-value-1", "CTXZIP_PROXY__COMPRESSION__RATE": "0.25",
           "CTXZIP_PROXY__SERVER__HOST": "0.0.0.0"}  # fmt: skip
    config = load_config(path, environ=env)
    assert config.server.port == 9999 and config.server.host == "0.0.0.0"
    assert config.compression.rate == 0.25 and config.compression.tags == ["context"]
    assert config.upstreams["openai"].api_key == "sk-secret-value-1"
    assert config.to_dict()["upstreams"]["openai"]["api_key"] == "***"
    policy = config.compression.policy()
    assert policy.rate_for(100) is None  # under min_tokens (200)
    assert policy.rate_for(300) == 0.25 and policy.rate_for(800) == 0.6
    assert policy.rate_for(5000) == 0.3
    from ctxzip.proxy.upstream import Upstreams

    ups = Upstreams(config)
    assert ups.pick("chat", "llama-3-8b").name == "vllm"
    assert ups.pick("chat", "gpt-4o").name == "openai"
    assert ups.pick("messages", "claude") is None  # no anthropic upstream: the local model


def test_yaml(tmp_path):
    path = tmp_path / "proxy.yaml"
    path.write_text(YAML)
    config = load_config(path, environ={})
    assert config.compression.method == "noop"
    assert config.compression.roles == ["user", "assistant"]
    assert config.overrides.allow == ["disable"]


@pytest.mark.parametrize(("text", "words"), [
    ("[compression]\nmethd = 'x'\n", "unknown keys ['methd']"),
    ("[compression]\nrate = 'high'\n", "compression.rate must be float"),
    ("[compression]\nroles = ['system']\n", "can never be compressed"),
    ("[upstreams.a]\nurl = 'ftp://x'\n", "http(s) URL"),
    ("[upstreams.a]\nurl = 'https://x/v1?key=abc'\n", "must not carry a query"),
    ("[upstreams.a]\nurl = 'https://x'\napi_key = 'env:NOPE_NOT_SET'\n", "NOPE_NOT_SET"),
    ("[models]\n'gpt*' = 'missing'\n", "unknown upstream"),
    ("[overrides]\nallow = ['everything']\n", "unknown"),
    ("[compression]\non_error = 'explode'\n", "fail_open"),
    ("not toml at all [", "does not parse"),
])  # fmt: skip
def test_invalid_config_is_one_clear_error(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert words in str(info.value)


def test_print_config_masks_secrets(tmp_path, monkeypatch):
    path = tmp_path / "proxy.toml"
    path.write_text(TOML)
    monkeypatch.setenv("MY_OPENAI_KEY", "sk-print-canary-777")
    result = CliRunner().invoke(cli, ["proxy", "--config", str(path), "--port", "1234",
                                      "--print-config"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["server"]["port"] == 1234
    assert data["upstreams"]["openai"]["api_key"] == "***"
    assert "sk-print-canary-777" not in result.output
    result = CliRunner().invoke(cli, ["proxy", "--upstream", "http://h:1/v1", "--print-config"])
    data = json.loads(result.output)
    assert data["upstreams"]["anthropic"]["url"] == "http://h:1/v1"
    bad = tmp_path / "bad.toml"
    bad.write_text("[compression]\nmethd = 1\n")
    result = CliRunner().invoke(cli, ["proxy", "--config", str(bad), "--print-config"])
    assert result.exit_code == 2 and "methd" in result.output


# ---- the message policy as a library ----------------------------------------------------

LONG = " ".join(f"Fact {i}: the value of item {i} is {i * 3}." for i in range(60))


def test_openai_policy_leaves_tools_and_system_alone():
    body = {
        "model": "gpt-4o",
        "tools": [{"type": "function", "function": {"name": "f", "description": LONG}}],
        "messages": [
            {"role": "system", "content": LONG},
            {"role": "developer", "content": LONG},
            {"role": "user", "content": [{"type": "text", "text": LONG},
                                         {"type": "image_url", "image_url": {"url": "data:x"}}]},
            {"role": "assistant", "content": LONG,
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": LONG},
            {"role": "assistant", "content": LONG},
        ],
    }  # fmt: skip
    policy = MessagePolicy(roles=("user", "assistant"), min_tokens=10)
    new, results = compress_messages(body, TruncateCompressor(), "openai", policy)
    assert len(results) == 2  # the user's text part and the plain assistant reply
    for i in (0, 1, 3, 4):
        assert new["messages"][i] == body["messages"][i]
    assert new["tools"] == body["tools"]
    assert new["messages"][2]["content"][1] == body["messages"][2]["content"][1]
    assert len(new["messages"][2]["content"][0]["text"]) < len(LONG)
    assert len(new["messages"][5]["content"]) < len(LONG)
    assert body["messages"][5]["content"] == LONG  # the input body is never mutated


def test_anthropic_documents_and_breakpoint_in_last_message():
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": LONG}},
        {"type": "text", "text": LONG},
    ]}]}  # fmt: skip
    plan = plan_request(body, "anthropic", MessagePolicy(parts=("text", "document"), min_tokens=10),
                        lambda s: len(s.split()))  # fmt: skip
    assert len(plan.units) == 1 and len(plan.units[0].regions) == 2
    assert plan.query is not None
    new, _ = compress_messages(body, TruncateCompressor(), "anthropic",
                               MessagePolicy(parts=("text",), min_tokens=10))  # fmt: skip
    blocks = new["messages"][0]["content"]
    assert blocks[0] == body["messages"][0]["content"][0]
    assert blocks[1] == body["messages"][0]["content"][1]  # documents not allowed here
    assert len(blocks[2]["text"]) < len(LONG)


def test_policy_rejects_bad_settings():
    with pytest.raises(ValueError):
        MessagePolicy(roles=("system",))
    with pytest.raises(ValueError):
        MessagePolicy(tags=("a b",))
    with pytest.raises(ValueError):
        MessagePolicy(ranges=(RateRange(10, 1.5),))
