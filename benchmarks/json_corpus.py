"""A broad set of real JSON tool outputs, made on this machine offline (no network).

The agent-traffic corpus (bench_tool_results.py) holds five JSON results, two of them
mostly one license string, so it says little about JSON tool output in general. This set
adds what system and package tools print as JSON: iproute2 (``ip -j``), util-linux
(``lsblk -J``, ``findmnt -J``, ``lscpu -J``, ...), ``pip list`` / ``pip inspect``, and JSON
files shipped inside installed packages (SBOMs, schemas, dashboards, datasets). A tool
that is missing is skipped. Each document is capped at `CAP` characters by shortening
its longest array (a prefix of the records the tool printed), as an agent's result cap
would, and is served 2-space pretty-printed like the rest of the MCP benchmark.

    .venv/bin/python benchmarks/json_corpus.py   # the set, and what compaction removes

Run as a script it prints, per document and in total (all, and the record-shaped ones:
an array or object holding at least two records), the gpt-4o tokens that minifying and
`json_compact.compact` remove, after checking every value comes back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

CAP = 40_000  # characters, pretty-printed
SITE = Path(sysconfig.get_paths()["purelib"])
COMMANDS = [
    ["ip", "-j", "addr"], ["ip", "-j", "-s", "link"], ["ip", "-j", "route"],
    ["lsblk", "-J", "-O"], ["findmnt", "-J"], ["lscpu", "-J"], ["lsipc", "-J"],
    ["lsns", "-J"], ["lsirq", "-J"], ["lslocks", "-J"], ["lsfd", "-J"],
    [sys.executable, "-m", "pip", "list", "--format", "json"],
    [sys.executable, "-m", "pip", "inspect"],
]  # fmt: skip
FILES = [  # under site-packages; the first match of each glob
    "*.dist-info/sboms/pydantic-core.cyclonedx.json",
    "*.dist-info/sboms/ruff.cyclonedx.json",
    "pip/_vendor/bom.cdx.json",
    "ray/dashboard/modules/metrics/dashboards/default_grafana_dashboard_base.json",
    "ray/autoscaler/ray-schema.json",
    "ray/autoscaler/_private/_azure/azure-vm-template.json",
    "setuptools/config/setuptools.schema.json",
    "jsonschema_specifications/schemas/draft7/metaschema.json",
    "torch/_dynamo/graph_break_registry.json",
    "datasets/utils/resources/languages.json",
    "easy_vqa/data/test/questions.json",
]


def _longest_list(value: Any) -> list[Any] | None:
    best: list[Any] | None = None
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            if best is None or len(v) > len(best):
                best = v
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
    return best


def capped(value: Any) -> Any:
    """`value` with its longest array shortened to a prefix until it fits in `CAP`."""
    while len(json.dumps(value, indent=2, ensure_ascii=False)) > CAP:
        longest = _longest_list(value)
        if longest is None or len(longest) < 2:
            if isinstance(value, dict) and len(value) > 1:  # a big object: keep a prefix
                value = dict(list(value.items())[: len(value) // 2])
                continue
            break
        del longest[len(longest) // 2 :]
    return value


def _run(cmd: list[str]) -> Any:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        return json.loads(p.stdout) if p.returncode == 0 and p.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def broad_json() -> list[tuple[str, str]]:
    """(source, pretty-printed JSON text) for every source available here."""
    out: list[tuple[str, str]] = []
    found: list[tuple[str, Any]] = [
        (" ".join(c[2:] if c[0] == sys.executable else c), _run(c)) for c in COMMANDS
    ]
    for pattern in FILES:
        path = next(iter(sorted(SITE.glob(pattern))), None)
        if path is not None:
            try:
                found.append((pattern.split("/")[-1], json.loads(path.read_text("utf-8"))))
            except (OSError, ValueError):
                continue
    for source, value in found:
        if value is not None and value not in ({}, []):
            out.append((source, json.dumps(capped(value), indent=2, ensure_ascii=False)))
    return out


def record_shaped(value: Any) -> bool:
    """Whether `value` holds an array (or object) with at least two records in it."""
    items = (
        value
        if isinstance(value, list)
        else list(value.values())
        if isinstance(value, dict)
        else []
    )
    return sum(isinstance(v, dict) for v in items) >= 2 or any(record_shaped(v) for v in items)


def main() -> None:
    from ctxzip.compressors.content.json_compact import compact, expand_tables, minify
    from ctxzip.tokens import count_tokens

    totals = {"all": [0, 0, 0], "record-shaped": [0, 0, 0]}
    print("| source | tokens | minified | compact |\n|---|---|---|---|")
    for source, text in broad_json():
        out = compact(text) or text
        same = json.dumps(expand_tables(json.loads(out)), sort_keys=True) == json.dumps(
            json.loads(text), sort_keys=True
        )
        assert same, f"{source}: a value changed"
        n = [count_tokens(t, "gpt-4o") for t in (text, minify(text), out)]
        print(f"| {source} | {n[0]} | {1 - n[1] / n[0]:.1%} | {1 - n[2] / n[0]:.1%} |")
        for name in ("all", "record-shaped") if record_shaped(json.loads(text)) else ("all",):
            totals[name] = [a + b for a, b in zip(totals[name], n, strict=True)]
    for name, (t, m, c) in totals.items():
        print(f"| **{name}** | {t} | {1 - m / t:.1%} | {1 - c / t:.1%} |")


if __name__ == "__main__":
    main()
