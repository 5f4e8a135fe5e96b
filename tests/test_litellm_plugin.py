"""The LiteLLM plugin inside a real LiteLLM proxy (started on loopback with a config.yaml
that registers it), in front of a local upstream speaking OpenAI chat, Responses,
Anthropic messages and Gemini; clients are the real SDKs.

LiteLLM's pins clash with the project's, so the proxy runs from its own virtual
environment (tests/litellm_venv.py, built once; ``make litellm-venv``)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from gemini_fakes import GeminiUpstream
from google import genai
from google.genai import types
from litellm_venv import build
from test_proxy_fakes import LONG_CONTEXT, free_port, running_upstream, stop
from test_responses_fakes import build_log, package_json

MASTER = "sk-litellm-master-0123"
QUESTION = " Which version of needle-lib is installed?"


@pytest.fixture(scope="module")
def venv_python() -> Path:
    try:
        return build()
    except (subprocess.CalledProcessError, OSError) as exc:  # no registry, no disk...
        pytest.skip(f"the LiteLLM virtual environment could not be built: {exc}")


@pytest.fixture(scope="module")
def upstream():
    with running_upstream(GeminiUpstream) as fake:
        yield fake


def config_yaml(upstream_url: str, hook: str) -> str:
    models = textwrap.dedent(f"""\
        model_list:
          - model_name: gpt-4o
            litellm_params: {{model: openai/gpt-4o, api_base: "{upstream_url}/v1", api_key: sk-up}}
          - model_name: claude-sonnet
            litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: "{upstream_url}",
                              api_key: sk-ant-up}}
          - model_name: gemini-3-pro
            litellm_params: {{model: gemini/gemini-3-pro, api_base: "{upstream_url}/v1beta",
                              api_key: AIzaUpstream}}
        general_settings:
          master_key: {MASTER}
        """)
    if hook == "guardrail":
        return models + textwrap.dedent("""\
            guardrails:
              - guardrail_name: ctxzip
                litellm_params:
                  guardrail: ctxzip.middleware.litellm.Guardrail
                  mode: pre_call
                  default_on: true
                  tool_min_tokens: 200
                  min_tokens: 40
            """)
    return models + "litellm_settings:\n  callbacks: ctxzip_hooks.callback\n"


HOOKS = """\
from ctxzip.middleware.litellm import Callback
from ctxzip.middleware.tool_results import ToolResultPolicy
from ctxzip.middleware.messages import MessagePolicy

callback = Callback(tool_policy=ToolResultPolicy(min_tokens=200),
                    message_policy=MessagePolicy(min_tokens=40))
"""


@contextlib.contextmanager
def litellm_proxy(python: Path, upstream_url: str, hook: str, tmp: Path) -> Iterator[str]:
    """A LiteLLM proxy with ctxzip registered as `hook`; yields its base URL."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.yaml").write_text(config_yaml(upstream_url, hook))
    (tmp / "ctxzip_hooks.py").write_text(HOOKS)
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}  # fmt: skip
    log = (tmp / "litellm.log").open("wb")
    process = subprocess.Popen(
        [str(python), "-c", "from litellm.proxy.proxy_cli import run_server; run_server()",
         "--config", str(tmp / "config.yaml"), "--host", "127.0.0.1", "--port", str(port),
         "--telemetry", "False"],
        cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health/liveliness", timeout=2).status_code == 200:
                    break
            if time.time() > deadline or process.poll() is not None:
                log.flush()
                raise RuntimeError(
                    "LiteLLM did not start:\n" + (tmp / "litellm.log").read_text()[-4000:]
                )
            time.sleep(0.5)
        yield url
    finally:
        stop(process, 15)
        log.close()


@pytest.fixture(scope="module", params=["guardrail", "callback"])
def litellm(request, venv_python, upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"litellm-{request.param}")
    with litellm_proxy(venv_python, upstream.url, request.param, tmp) as url:
        yield request.param, url, tmp


@pytest.fixture(autouse=True)
def _reset(upstream):
    upstream.reset()


def chat_messages() -> list[dict]:
    return [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": LONG_CONTEXT + QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
         "function": {"name": "pip_list", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": package_json()},
    ]  # fmt: skip


TOOLS = [{"type": "function", "function": {"name": "pip_list", "description": "List packages.",
                                           "parameters": {"type": "object", "properties": {}}}}]  # fmt: skip


def _sent(upstream, suffix: str) -> dict:
    found = [r for r in upstream.requests if r["path"].endswith(suffix)]
    assert found, [r["path"] for r in upstream.requests]
    return found[-1]["json"]


def test_chat_completions_tool_results_compressed(litellm, upstream):
    _, url, _ = litellm
    client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0)
    answer = client.chat.completions.create(model="gpt-4o", messages=chat_messages(), tools=TOOLS)
    assert answer.choices[0].message.content.startswith("seen ")
    sent = _sent(upstream, "/chat/completions")["messages"]
    tool = sent[3]["content"]
    assert len(tool) < len(package_json()) / 2
    rows = json.loads(tool)  # still valid JSON, the needle kept as it was
    assert {"name": "needle-lib", "version": "9.8.7"} in rows
    assert sent[0] == chat_messages()[0] and sent[2]["tool_calls"][0]["id"] == "call_1"


def test_bypass_header_leaves_the_request_alone(litellm, upstream):
    _, url, _ = litellm
    client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0,
                           default_headers={"x-ctxzip-disable": "true"})  # fmt: skip
    client.chat.completions.create(model="gpt-4o", messages=chat_messages(), tools=TOOLS)
    sent = _sent(upstream, "/chat/completions")["messages"]
    assert sent[3]["content"] == package_json() and sent[1]["content"] == LONG_CONTEXT + QUESTION


@pytest.mark.parametrize("litellm", ["guardrail"], indirect=True)  # one hook is enough here
def test_cache_control_prefix_stays_as_sent(litellm, upstream):
    _, url, _ = litellm
    blocks = [{"type": "text", "text": LONG_CONTEXT, "cache_control": {"type": "ephemeral"}}]
    messages = [
        {"role": "user", "content": [{"type": "text", "text": LONG_CONTEXT + QUESTION}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_1", "name": "pip_list",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1",
                                      "content": build_log()}, *blocks]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_2",
                                      "content": package_json()}]},
    ]  # fmt: skip
    messages[3] = {"role": "assistant", "content": [{"type": "tool_use", "id": "tu_2",
                                                     "name": "pip_list", "input": {}}]}  # fmt: skip
    client = anthropic.Anthropic(base_url=url, api_key=MASTER, max_retries=0)
    answer = client.messages.create(model="claude-sonnet", max_tokens=64, system="Be terse.",
                                    messages=copy.deepcopy(messages))  # fmt: skip
    assert answer.content[0].text
    sent = _sent(upstream, "/v1/messages")
    # everything up to the cache_control marker: as sent; the later tool result: smaller
    assert sent["messages"][:3] == messages[:3]
    assert len(sent["messages"][4]["content"][0]["content"]) < len(package_json()) / 2
    assert json.dumps(sent).count('"cache_control"') == json.dumps(messages).count(
        '"cache_control"')  # fmt: skip


@pytest.mark.parametrize("litellm", ["guardrail"], indirect=True)  # one hook is enough here
def test_responses_function_call_output_compressed(litellm, upstream):
    _, url, _ = litellm
    client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0)
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": LONG_CONTEXT + QUESTION}]},
        {"type": "function_call", "call_id": "call_1", "name": "pip_list", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": package_json()},
    ]  # fmt: skip
    response = client.responses.create(model="gpt-4o", input=items)
    assert response.output_text.startswith("seen ")
    sent = _sent(upstream, "/responses")["input"]
    output = next(i for i in sent if i.get("type") == "function_call_output")["output"]
    assert len(output) < len(package_json()) / 2 and "needle-lib" in output


@pytest.mark.parametrize("litellm", ["guardrail"], indirect=True)  # one hook is enough here
def test_gemini_function_response_compressed(litellm, upstream):
    _, url, _ = litellm
    rows = json.loads(package_json())
    c = genai.Client(api_key=MASTER, http_options=types.HttpOptions(
        base_url=url, api_version="v1beta", timeout=60_000))  # fmt: skip
    contents = [
        types.Content(role="user", parts=[types.Part(text=LONG_CONTEXT + QUESTION)]),
        types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(
            name="pip_list", args={}), thought_signature=b"sig-bytes")]),
        types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
            name="pip_list", response={"packages": rows}))]),
    ]  # fmt: skip
    answer = c.models.generate_content(model="gemini-3-pro", contents=contents)
    assert answer.text.startswith("seen ")
    sent = [r for r in upstream.requests if ":generateContent" in r["path"]][-1]["json"]
    packages = sent["contents"][2]["parts"][0]["functionResponse"]["response"]["packages"]
    assert len(packages) < len(rows) / 2
    assert {"name": "needle-lib", "version": "9.8.7"} in packages


def test_fails_open_with_a_reason(venv_python):
    script = textwrap.dedent("""\
        import json
        from ctxzip.middleware.litellm import Compression
        data = {"messages": [{"role": "user", "content": "x " * 500}], "metadata": {}}
        out = Compression(method="no-such-method").apply(data, "acompletion")
        print(json.dumps({"same": out["messages"][0]["content"] == "x " * 500,
                          "report": out["metadata"]["ctxzip"]}))
        """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([str(venv_python), "-c", script], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same"] is True
    assert result["report"]["status"] == "skipped"
    assert result["report"]["reason"].startswith("error:")
