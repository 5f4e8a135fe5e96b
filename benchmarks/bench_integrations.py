"""The agent-traffic corpus through each integration surface, in one run.

The corpus is benchmarks/bench_tool_results.py's (real tool outputs made on this
machine: JSON inventories, grep hits, git diffs, logs, source files, tables, each with
needle questions). Each result is served as a tool result through:

  gemini        the proxy's Gemini route, with the real `google-genai` SDK, in front of a
                local upstream speaking the Gemini wire format (the result is a
                ``functionResponse``: JSON as its value, other text as a string)
  litellm       a real LiteLLM proxy (build/litellm-venv) with the ctxzip guardrail, in
                front of the same local upstream, with the real `openai` SDK (a chat
                ``role: tool`` message)
  mcp lossless  ``ctxzip mcp-proxy --lossless-only`` in front of an MCP server returning
                the result (JSON pretty-printed, as servers do), with the real `mcp` client;
                JSON results twice: as text only, and as text plus the ``structuredContent``
                that SDK servers add (tokens counted over both, as a client sees them)
  mcp lossy     the same with lossy compression above the token floor; every marker's key
                is resolved with ``ctxzip_expand`` and checked byte for byte
  mcp lossless (broad JSON set)
                the lossless mode again, over benchmarks/json_corpus.py: real JSON outputs
                of system and package tools (``ip -j``, ``lsblk -J``, ``pip inspect``, SBOMs,
                schemas, ...), made on the machine, pretty-printed as servers send them;
                again over its record-shaped documents (an array or object of records)

"Every value equal" compares decoded values: numbers by type and value (1, 1.0 and true
apart), objects unordered, as JSON defines them.

Targets (issue 24): gemini and litellm remove >= 50% of tool-result tokens and keep
>= 95% of needles; mcp lossless removes >= 40% of JSON tokens with every value equal
after decoding; mcp lossy removes >= 50% overall with every omitted span returned
byte-identical.

    .venv/bin/python benchmarks/bench_integrations.py [--no-litellm] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

import openai  # noqa: E402
from bench_tool_results import READER, Case, corpus  # noqa: E402
from gemini_fakes import GeminiUpstream  # noqa: E402
from google import genai  # noqa: E402
from google.genai import types  # noqa: E402
from json_corpus import broad_json, record_shaped  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402
from test_proxy_fakes import make_config, run_proxy, serve  # noqa: E402

from ctxzip.compressors.content.json_compact import compact, expand_tables  # noqa: E402
from ctxzip.compressors.content.json_records import members  # noqa: E402
from ctxzip.tokens import count_tokens  # noqa: E402

LINE_KEY = re.compile(r"expand key ([0-9a-f]{12})")
NOTE_KEY = re.compile(r'"ctxzip_omitted":\s*\{[^{}]*"key":\s*"([0-9a-f]{12})"')


def tokens(text: str) -> int:
    return count_tokens(text, READER)


class Tally:
    """Tokens and needles of one surface."""

    def __init__(self) -> None:
        self.t_in = self.t_out = self.kept = self.needles = self.results = 0
        self.checks: dict[str, list[bool]] = {}

    def add(self, case: Case, before: str, after: str) -> None:
        self.results += 1
        self.t_in += tokens(before)
        self.t_out += tokens(after)
        for needle in case.needles:
            if needle.kept(before):  # needles that hold on the form as sent
                self.needles += 1
                self.kept += needle.kept(after)

    def check(self, name: str, ok: bool) -> None:
        self.checks.setdefault(name, []).append(ok)

    def row(self) -> dict[str, Any]:
        return {"results": self.results, "tokens_in": self.t_in, "tokens_out": self.t_out,
                "removed": 1 - self.t_out / self.t_in if self.t_in else 0.0,
                "needles": self.kept / self.needles if self.needles else 1.0,
                **{k: f"{sum(v)}/{len(v)}" for k, v in self.checks.items()}}  # fmt: skip


def same_values(a: Any, b: Any) -> bool:
    """Equal after decoding: 1, 1.0 and true apart; objects unordered, as in JSON."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def tool_value(case: Case) -> Any:
    return json.loads(case.text) if case.kind == "json" else case.text


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# ---- gemini ------------------------------------------------------------------------------


def gemini_surface(cases: list[Case], fake: GeminiUpstream, up: str, rate: float) -> Tally:
    config = make_config(up, upstreams={"gemini": {"url": up + "/v1beta"}},
                         tool_results={"rate": rate, "prose_method": "extractive"})  # fmt: skip
    tally = Tally()
    with run_proxy(config) as (url, _):
        client = genai.Client(api_key="AIzaBench", http_options=types.HttpOptions(
            base_url=url, timeout=120_000))  # fmt: skip
        for case in cases:
            value = tool_value(case)
            response = {"result": value} if case.kind == "json" else {"output": value}
            contents = [
                types.Content(role="user", parts=[types.Part(text=case.query)]),
                types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(
                    name="tool", args={}), thought_signature=b"sig")]),
                types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
                    name="tool", response=response))]),
            ]  # fmt: skip
            client.models.generate_content(model="gemini-3-pro", contents=contents)
            sent = fake.last["json"]["contents"][2]["parts"][0]["functionResponse"]["response"]
            got = sent["result"] if case.kind == "json" else sent["output"]
            tally.add(case, as_text(value), as_text(got))
            if case.kind == "json":
                tally.check("same_json_type", type(got) is type(value))
    return tally


# ---- litellm -----------------------------------------------------------------------------


def litellm_surface(cases: list[Case], fake: GeminiUpstream, up: str, tmp: Path) -> Tally | str:
    from litellm_venv import build
    from test_litellm_plugin import MASTER, litellm_proxy

    try:
        python = build()
    except Exception as exc:
        return f"skipped: the LiteLLM venv could not be built ({exc})"
    tally = Tally()
    with litellm_proxy(python, up, "guardrail", tmp / "litellm") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0, timeout=120)
        for case in cases:
            messages = [
                {"role": "user", "content": case.query},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1",
                 "type": "function", "function": {"name": "tool", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": case.text},
            ]  # fmt: skip
            client.chat.completions.create(model="gpt-4o", messages=messages)
            got = [r for r in fake.requests if r["path"].endswith("/chat/completions")][-1]
            text = got["json"]["messages"][2]["content"]
            tally.add(case, case.text, text)
            if case.kind == "json":
                with contextlib.suppress(ValueError):
                    json.loads(text)
                    tally.check("valid_json", True)
                    continue
                tally.check("valid_json", False)
    return tally


# ---- mcp ---------------------------------------------------------------------------------


def served(case: Case) -> str:
    if case.kind == "json":
        return json.dumps(json.loads(case.text), indent=2, ensure_ascii=False)
    return case.text


def _omitted_ok(expanded: str, lossy_input: str, json_note: bool) -> bool:
    """An omitted span is byte-identical: a line block is a substring of what the lossy
    stage saw; a JSON note's records are each a substring of it."""
    if not json_note:
        return bool(expanded) and expanded in lossy_input
    try:
        json.loads(expanded)
        found, _ = members(expanded, 0)
    except (ValueError, IndexError):
        return False
    return bool(found) and all(expanded[p:e] in lossy_input for _, p, _s, e in found)


async def mcp_surface(cases: list[Case], broad: list[Case], tmp: Path, floor: int,
                      rate: float) -> tuple[Tally, ...]:  # fmt: skip
    path = tmp / "corpus.json"
    path.write_text(json.dumps([{"kind": c.kind, "text": c.text} for c in cases + broad]))
    server = [str(ROOT / "benchmarks" / "mcp_corpus_server.py"), str(path)]
    wrapper = ["-m", "ctxzip.cli", "mcp-proxy"]
    lossless, lossy, structured, wide, shaped = Tally(), Tally(), Tally(), Tally(), Tally()
    env = dict(os.environ)
    modes = ((lossless, ["--lossless-only"]), (lossy, ["--floor", str(floor), "--rate", str(rate),
                                                       "--prose-method", "extractive"]))  # fmt: skip
    for tally, options in modes:
        params = StdioServerParameters(command=sys.executable, env=env,
                                       args=[*wrapper, *options, "--", sys.executable, *server])  # fmt: skip
        async with Client(params, read_timeout_seconds=300) as client:
            for i, case in enumerate(cases + broad if tally is lossless else cases):
                if tally is lossless and case.kind != "json":
                    continue
                sink = wide if i >= len(cases) else tally  # the broad set: its own row
                result = await client.call_tool("result", {"index": i, "query": case.query})
                text = "".join(b.text for b in result.content if b.type == "text")
                before = served(case)
                sink.add(case, before, text)
                if tally is lossless:
                    same = same_values(expand_tables(json.loads(text)), json.loads(before))
                    sink.check("values_equal", same)
                    if sink is wide:
                        if record_shaped(json.loads(before)):
                            shaped.add(case, before, text)
                            shaped.check("values_equal", same)
                        continue
                    both = await client.call_tool("structured", {"index": i})
                    value = both.structured_content
                    seen = [b.text for b in both.content if b.type == "text"]
                    structured.add(case, before + json.dumps(value, ensure_ascii=False),
                                   "".join(seen) + json.dumps(value, ensure_ascii=False))  # fmt: skip
                    original = json.loads(case.text)
                    structured.check("values_equal", same_values(value, (
                        original if isinstance(original, dict) else {"result": original})))  # fmt: skip
                    continue
                small = compact(before)
                lossy_input = small if small is not None and len(small) < len(before) else before
                for regex, is_note in ((LINE_KEY, False), (NOTE_KEY, True)):
                    for key in regex.findall(text):
                        got = await client.call_tool("ctxzip_expand", {"key": key})
                        expanded = "".join(b.text for b in got.content if b.type == "text")
                        tally.check("expand_identical", not got.is_error and _omitted_ok(
                            expanded, lossy_input, is_note))  # fmt: skip
    return lossless, structured, lossy, wide, shaped


# ---- main --------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--floor", type=int, default=2000, help="mcp lossy: token floor")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    cases = corpus(args.seed)
    print(f"corpus: {len(cases)} tool results, {sum(tokens(c.text) for c in cases)} tokens, "
          f"{sum(len(c.needles) for c in cases)} needles", file=sys.stderr)  # fmt: skip
    rows: dict[str, Any] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ctxzip-bench-") as tmp:
        fake = GeminiUpstream()
        with serve(fake.app) as up:
            rows["gemini"] = gemini_surface(cases, fake, up, args.rate).row()
            print(f"gemini done ({time.perf_counter() - start:.0f}s)", file=sys.stderr)
            if not args.no_litellm:
                got = litellm_surface(cases, fake, up, Path(tmp))
                rows["litellm"] = got if isinstance(got, str) else got.row()
                print(f"litellm done ({time.perf_counter() - start:.0f}s)", file=sys.stderr)
        broad = [Case("json", "broad: " + source, text) for source, text in broad_json()]
        lossless, structured, lossy, wide, shaped = asyncio.run(mcp_surface(
            cases, broad, Path(tmp), args.floor, args.rate))  # fmt: skip
        rows["mcp lossless (json)"] = lossless.row()
        rows["mcp lossless (json + structuredContent)"] = structured.row()
        rows["mcp lossy"] = lossy.row()
        rows["mcp lossless (broad JSON set)"] = wide.row()
        rows["mcp lossless (broad JSON set, record-shaped)"] = shaped.row()
    targets = {
        "gemini": lambda r: r["removed"] >= 0.5 and r["needles"] >= 0.95,
        "litellm": lambda r: r["removed"] >= 0.5 and r["needles"] >= 0.95,
        "mcp lossless (json)": lambda r: r["removed"] >= 0.4 and _all(r["values_equal"]),
        "mcp lossless (json + structuredContent)": lambda r: (
            r["removed"] >= 0.4 and _all(r["values_equal"])
        ),
        "mcp lossy": lambda r: r["removed"] >= 0.5 and _all(r.get("expand_identical", "0/0")),
        "mcp lossless (broad JSON set)": lambda r: r["removed"] >= 0.4 and _all(r["values_equal"]),
        "mcp lossless (broad JSON set, record-shaped)": lambda r: (
            r["removed"] >= 0.4 and _all(r["values_equal"])
        ),
    }
    print(f"\nrate {args.rate}; mcp floor {args.floor} tokens; tokens in {READER}'s tokenizer\n")
    print(
        "| surface | results | tokens in | tokens out | removed | needles kept | checks | target |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        if isinstance(r, str):
            print(f"| {name} | {r} |||||||")
            continue
        checks = ", ".join(f"{k} {v}" for k, v in r.items() if isinstance(v, str))
        ok = "met" if targets[name](r) else "MISSED"
        print(f"| {name} | {r['results']} | {r['tokens_in']} | {r['tokens_out']} | "
              f"{r['removed']:.1%} | {r['needles']:.1%} | {checks} | {ok} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def _all(fraction: str) -> bool:
    done, total = (int(x) for x in fraction.split("/"))
    return total > 0 and done == total


if __name__ == "__main__":
    main()
