"""Tool-result compression: tokens removed and needles kept per content type, same run.

The corpus is made on this machine when the script runs, from real tool output:
  json     `importlib.metadata` inventories (array of records, and an object of objects)
           plus `pip list --format json`
  search   `grep -rn "def "` over standard-library packages
  diff     `git log -p` of this repository
  logs     `python -X importtime` import logs, `dpkg -l` and `man -k .` listings
  code     standard-library source files
  table    CSV and markdown tables of standard-library module sizes
Each output is cut into results of about 5-8k tokens, and each result gets needle
questions built from its own content: (question, key, answer). A needle is kept when
the answer still appears within 160 characters of the key (a whole token) in the
compressed result, whatever the layout; needles are kept only if that holds on the
original.

Systems, on the same results:
  none        the result as it is
  content     ctxzip's `content` compressor (the proxy's tool-result path), rate 0.3,
              query = the needle questions of the result
  extractive  ctxzip's `extractive` on the whole result as plain text, same rate and
              query (threshold off, so it always keeps something)
  headroom    the peer tool `headroom-ai` (`headroom.compress` on a user question ->
              tool call -> tool result conversation), installed by this script into
              build/headroom-venv; skipped with a message when it cannot be installed
Timing: p50 of the structural compressors (`route`) on a ~10k-token result per type.

    .venv/bin/python benchmarks/bench_tool_results.py            # all systems
    .venv/bin/python benchmarks/bench_tool_results.py --no-extractive --no-headroom
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import random
import re
import statistics
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ctxzip import Budget
from ctxzip.compressors.content import ContentCompressor
from ctxzip.compressors.content.router import route
from ctxzip.tokens import count_tokens

ROOT = Path(__file__).resolve().parent.parent
STDLIB = Path(sysconfig.get_paths()["stdlib"])
HEADROOM_VENV = ROOT / "build" / "headroom-venv"
READER = "gpt-4o"
WINDOW = 160


@dataclass
class Needle:
    question: str
    key: str
    answer: str

    def kept(self, text: str) -> bool:
        # the key as a whole token where it starts or ends with a word character, so that
        # "json" does not match "json.decoder"; the check is the same for every system
        # and does not depend on a layout (grep hits grouped by file still count)
        head = r"(?<![\w.-])" if re.match(r"\w", self.key) else ""
        tail = r"(?![\w.-])" if re.search(r"\w$", self.key) else ""
        for m in re.finditer(head + re.escape(self.key) + tail, text):
            lo, hi = max(0, m.start() - WINDOW), m.end() + WINDOW
            if self.answer in text[lo:hi]:
                return True
        return False


@dataclass
class Case:
    kind: str  # the content type the corpus meant to produce
    source: str
    text: str
    needles: list[Needle] = field(default_factory=list)

    @property
    def query(self) -> str:
        return " ".join(n.question for n in self.needles)


def run(cmd: list[str], cwd: Path | None = None, stderr: bool = False) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return p.stderr if stderr else p.stdout


def chunks(lines: list[str], rng: random.Random, lo: int = 5000, hi: int = 8000) -> list[str]:
    """Consecutive lines grouped into texts of about lo..hi tokens (by a 4-chars estimate)."""
    out, cur, size, target = [], [], 0, rng.randint(lo, hi) * 4
    for line in lines:
        cur.append(line)
        size += len(line)
        if size >= target:
            out.append("".join(cur))
            cur, size, target = [], 0, rng.randint(lo, hi) * 4
    if size > lo * 2:
        out.append("".join(cur))
    return out


def unique(items: list[str]) -> set[str]:
    seen: dict[str, int] = {}
    for x in items:
        seen[x] = seen.get(x, 0) + 1
    return {x for x, n in seen.items() if n == 1}


def pick(rng: random.Random, pool: list[Needle], text: str, n: int = 3) -> list[Needle]:
    """`n` needles whose answers occur near their keys in `text` itself."""
    pool = [x for x in pool if x.kept(text)]
    return rng.sample(pool, min(n, len(pool)))


# ---- corpus -----------------------------------------------------------------------------


def json_cases(rng: random.Random) -> list[Case]:
    dists = []
    for d in md.distributions():
        meta = d.metadata
        dists.append({
            "name": meta["Name"], "version": d.version, "summary": meta.get("Summary") or "",
            "requires_python": meta.get("Requires-Python"), "license": meta.get("License"),
            "requires": (d.requires or [])[:6],
        })  # fmt: skip
    dists.sort(key=lambda r: str(r["name"]).lower())
    cases = []
    names = unique([str(r["name"]) for r in dists])
    for start in range(0, len(dists), 45):
        rows = dists[start : start + 45]
        if len(rows) < 20:
            continue
        as_object = (start // 45) % 2 == 1
        value: object = {"count": len(rows), "packages": rows}
        if as_object:
            value = {str(r["name"]): {k: v for k, v in r.items() if k != "name"} for r in rows}
        text = json.dumps(value, indent=2)
        pool = [Needle(f"Which version of {r['name']} is installed?", str(r["name"]),
                       str(r["version"])) for r in rows if r["name"] in names]  # fmt: skip
        cases.append(Case("json", "importlib.metadata", text, pick(rng, pool, text)))
    pip = run([sys.executable, "-m", "pip", "list", "--format", "json"])
    if pip:
        rows = json.loads(pip)
        pool = [Needle(f"Which version of {r['name']} is installed?", r["name"], r["version"])
                for r in rows]  # fmt: skip
        cases.append(Case("json", "pip list --format json", pip, pick(rng, pool, pip)))
    return cases


def search_cases(rng: random.Random) -> list[Case]:
    dirs = [str(STDLIB / d) for d in ("email", "json", "http", "asyncio", "xml", "logging",
                                       "unittest", "importlib", "concurrent", "urllib")]  # fmt: skip
    out = run(["grep", "-rn", "def ", *dirs])
    cases = []
    for text in chunks(out.splitlines(keepends=True), rng)[:8]:
        hits = re.findall(r"^([^:\n]+):(\d+):\s*(?:async\s+)?def (\w+)", text, re.M)
        once = unique([h[2] for h in hits])
        pool = [Needle(f"Where is the function {name} defined (file and line)?",
                       f"def {name}(", f"{line}:")
                for path, line, name in hits if name in once]  # fmt: skip
        cases.append(Case("search", "grep -rn", text, pick(rng, pool, text)))
    return cases


def diff_cases(rng: random.Random) -> list[Case]:
    out = run(["git", "log", "-p", "--no-color", "-n", "80"], cwd=ROOT)
    cases = []
    for text in chunks(out.splitlines(keepends=True), rng)[:6]:
        pool = []
        for m in re.finditer(r"^commit ([0-9a-f]{40})\n(?:.*\n){2,3}?\n    (.{12,60})", text, re.M):
            pool.append(Needle(f"What is the hash of the commit titled '{m.group(2)}'?",
                               m.group(2), m.group(1)[:12]))  # fmt: skip
        adds = re.findall(r"^\+\s*([A-Za-z_]\w{5,}) = (\S.{4,30})$", text, re.M)
        once = unique([a[0] for a in adds])
        pool += [Needle(f"In the diff, what is {name} set to?", f"{name} = ", value[:20])
                 for name, value in adds if name in once]  # fmt: skip
        cases.append(Case("diff", "git log -p", text, pick(rng, pool, text, 4)))
    return cases


def log_cases(rng: random.Random) -> list[Case]:
    cases = []
    mods = "asyncio, email.mime.multipart, http.server, json, xml.etree.ElementTree, sqlite3, "
    mods += "unittest, argparse, logging.handlers, concurrent.futures, urllib.request, csv"
    imports = run([sys.executable, "-X", "importtime", "-c", f"import {mods}"], stderr=True)
    dpkg = run(["dpkg", "-l"])
    mank = run(["man", "-k", "."])
    for source, out in (("python -X importtime", imports), ("dpkg -l", dpkg), ("man -k", mank)):
        for text in chunks(out.splitlines(keepends=True), rng)[:4]:
            pool: list[Needle] = []
            if source.startswith("python"):
                rows = re.findall(r"^import time:\s+\d+ \|\s+(\d+) \|\s+([\w.]+)$", text, re.M)
                once = unique([r[1].strip() for r in rows])
                pool = [Needle(f"How long did importing {mod.strip()} take, cumulatively?",
                               mod, cum) for cum, mod in rows
                        if mod.strip() in once and "." in mod]  # fmt: skip
            elif source.startswith("dpkg"):
                rows = re.findall(r"^ii  (\S+)\s+(\S+)\s", text, re.M)
                pool = [Needle(f"Which version of package {p} is installed?", p, v)
                        for p, v in rows]  # fmt: skip
            else:
                rows = re.findall(r"^(\S+) \((\w+)\)\s+- (.{8,40})", text, re.M)
                once = unique([r[0] for r in rows])
                pool = [Needle(f"What does {n} in man section {s} do?", f"{n} ({s})", d[:20])
                        for n, s, d in rows if n in once]  # fmt: skip
            if pool:
                cases.append(Case("logs", source, text, pick(rng, pool, text)))
    return cases


def code_cases(rng: random.Random) -> list[Case]:
    cases = []
    for name in ("argparse.py", "configparser.py", "subprocess.py", "textwrap.py", "tarfile.py",
                 "pathlib.py", "inspect.py"):  # fmt: skip
        path = STDLIB / name
        if not path.exists():
            continue
        for text in chunks(path.read_text().splitlines(keepends=True), rng)[:1]:
            rows = re.findall(r"^\s{8,}([a-z_]\w{4,}) = (\S.{4,40})$", text, re.M)
            once = unique([r[0] for r in rows])
            pool = [Needle(f"In {name}, what is {var} set to?", f"{var} = ", value[:20])
                    for var, value in rows if var in once]  # fmt: skip
            cases.append(Case("code", name, text, pick(rng, pool, text)))
    return cases


def table_cases(rng: random.Random) -> list[Case]:
    rows = []
    for path in sorted(STDLIB.rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        mod = ".".join(path.relative_to(STDLIB).with_suffix("").parts)
        rows.append((mod, len(data), data.count(b"\n"), data.count(b"\ndef ")))
    cases = []
    lines = [f"{m},{b},{n},{d}\n" for m, b, n, d in rows]
    TABLE_ROWS[:] = ["module,bytes,lines,defs\n", *lines]
    for i, text in enumerate(chunks(lines, rng, 2500, 4000)[:8]):
        body = re.findall(r"^([\w.]+),(\d+),(\d+),(\d+)$", text, re.M)
        if i % 2:
            text = "| module | bytes | lines | defs |\n|---|---|---|---|\n" + "".join(
                f"| {m} | {b} | {n} | {d} |\n" for m, b, n, d in body)  # fmt: skip
        else:
            text = "module,bytes,lines,defs\n" + text
        pool = [Needle(f"How many lines does the module {m} have?", m, n)
                for m, _b, n, _d in body]  # fmt: skip
        cases.append(Case("table", "stdlib module sizes", text, pick(rng, pool, text)))
    return cases


TABLE_ROWS: list[str] = []  # the whole CSV table, for the timing run


def corpus(seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for make in (json_cases, search_cases, diff_cases, log_cases, code_cases, table_cases):
        cases += [c for c in make(rng) if c.needles]
    return cases


# ---- systems ------------------------------------------------------------------------------


def headroom_python() -> Path | None:
    """The peer's venv python, installing headroom-ai into it on first use."""
    python = HEADROOM_VENV / "bin" / "python"
    if python.exists() and run([str(python), "-c", "import headroom; print('ok')"]).strip():
        return python
    print(f"installing headroom-ai into {HEADROOM_VENV} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(HEADROOM_VENV)], check=False)
    p = subprocess.run([str(python), "-m", "pip", "install", "-q", "headroom-ai"],
                       capture_output=True, text=True)  # fmt: skip
    if p.returncode != 0:
        print("headroom-ai could not be installed (offline?); skipping it:\n" + p.stderr[-600:],
              file=sys.stderr)  # fmt: skip
        return None
    return python


HEADROOM_DRIVER = r"""
import json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from headroom import compress
for line in sys.stdin:
    job = json.loads(line)
    messages = [
        {"role": "user", "content": job["query"]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "tool", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": job["text"]},
    ]
    start = time.perf_counter()
    out = compress(messages, model="gpt-4o").messages[2]["content"]
    seconds = time.perf_counter() - start
    if not isinstance(out, str):
        out = json.dumps(out)
    print(json.dumps({"text": out, "seconds": seconds}), flush=True)
"""


def run_headroom(python: Path, cases: list[Case]) -> list[tuple[str, float]] | None:
    jobs = "".join(json.dumps({"text": c.text, "query": c.query}) + "\n" for c in cases)
    # warm-up (first call loads the pipeline), then the real run
    warm = json.dumps({"text": cases[0].text, "query": cases[0].query}) + "\n"
    p = subprocess.run([str(python), "-c", HEADROOM_DRIVER], input=warm + jobs,
                       capture_output=True, text=True, timeout=1800)  # fmt: skip
    if p.returncode != 0:
        print("headroom failed; skipping it:\n" + p.stderr[-800:], file=sys.stderr)
        return None
    rows = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")][1:]
    return [(r["text"], r["seconds"]) for r in rows]


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--no-extractive", action="store_true")
    ap.add_argument("--no-headroom", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()

    cases = corpus(args.seed)
    tokens = [count_tokens(c.text, READER) for c in cases]
    print(f"corpus: {len(cases)} tool results, {sum(tokens)} tokens "
          f"({min(tokens)}-{max(tokens)} each), {sum(len(c.needles) for c in cases)} needles",
          file=sys.stderr)  # fmt: skip
    budget = Budget(rate=args.rate)
    outputs: dict[str, list[tuple[str, float]]] = {"none": [(c.text, 0.0) for c in cases]}

    content = ContentCompressor(prose_method="extractive", tokenizer=READER)
    outs = []
    for c in cases:
        start = time.perf_counter()
        text = content.compress(c.text, query=c.query, budget=budget).texts[0]
        outs.append((text, time.perf_counter() - start))
    outputs["content"] = outs

    if not args.no_extractive:
        from ctxzip.compressors.extractive import ExtractiveCompressor

        ext = ExtractiveCompressor(threshold=None, tokenizer=READER)
        outs = []
        for c in cases:
            start = time.perf_counter()
            text = ext.compress(c.text, query=c.query, budget=budget).texts[0]
            outs.append((text, time.perf_counter() - start))
        outputs["extractive"] = outs

    if not args.no_headroom:
        python = headroom_python()
        got = run_headroom(python, cases) if python else None
        if got is not None:
            outputs["headroom"] = got

    kinds = sorted({c.kind for c in cases})
    report: dict[str, dict[str, dict[str, float]]] = {}
    for system, outs in outputs.items():
        report[system] = {}
        for kind in [*kinds, "all"]:
            idx = [i for i, c in enumerate(cases) if kind in ("all", c.kind)]
            t_in = sum(tokens[i] for i in idx)
            t_out = sum(count_tokens(outs[i][0], READER) for i in idx)
            needles = [n.kept(outs[i][0]) for i in idx for n in cases[i].needles]
            json_idx = [i for i in idx if cases[i].kind == "json"]
            report[system][kind] = {
                "results": len(idx), "tokens_in": t_in, "tokens_out": t_out,
                "removed": 1 - t_out / t_in if t_in else 0.0,
                "needles": sum(needles) / len(needles) if needles else 1.0,
                "valid_json": (sum(is_json(outs[i][0]) for i in json_idx) / len(json_idx)
                               if json_idx else float("nan")),
                "p50_ms": statistics.median(outs[i][1] for i in idx) * 1000,
            }  # fmt: skip

    # structural compressors alone on ~10k-token results
    timing = {}
    for kind in kinds:
        lines = "".join(c.text for c in cases if c.kind == kind).splitlines(keepends=True)
        if kind == "table":
            lines = TABLE_ROWS
        big = "".join(lines if kind == "table" else lines[: len(lines) // 2])
        while count_tokens(big, READER) > 10_000:
            big = big[: int(len(big) * 0.95)].rsplit("\n", 1)[0] + "\n"
        if kind == "json":  # one valid document of about 10k tokens
            rows = []
            for c in cases:
                if c.kind == "json" and c.source == "importlib.metadata":
                    value = json.loads(c.text)
                    rows += value.get("packages") or [{"name": k, **v} for k, v in value.items()
                                                      if isinstance(v, dict)]  # fmt: skip
            while count_tokens(json.dumps(rows, indent=2), READER) > 10_500:
                rows = rows[:-5]
            big = json.dumps(rows, indent=2)
        if kind == "prose":
            continue
        query = next(c.query for c in cases if c.kind == kind)
        runs = []
        for _ in range(25):
            start = time.perf_counter()
            route(big, query, args.rate)
            runs.append(time.perf_counter() - start)
        timing[kind] = {"tokens": count_tokens(big, READER),
                        "p50_ms": statistics.median(runs) * 1000}  # fmt: skip

    print(
        f"\nrate {args.rate}; tokens in {READER}'s tokenizer; needle = answer within "
        f"{WINDOW} chars of its key\n"
    )
    print(
        "| system | type | results | tokens in | tokens out | removed | needles kept "
        "| valid JSON | p50 ms/result |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for system, rows in report.items():
        for kind, r in rows.items():
            vj = "" if r["valid_json"] != r["valid_json"] else f"{r['valid_json']:.0%}"
            print(
                f"| {system} | {kind} | {r['results']} | {r['tokens_in']} | {r['tokens_out']} "
                f"| {r['removed']:.1%} | {r['needles']:.1%} | {vj} | {r['p50_ms']:.1f} |"
            )
    print("\nstructural compressors alone (`route`), p50 of 25 runs:\n")
    print("| type | tokens | p50 ms |\n|---|---|---|")
    for kind, t in timing.items():
        print(f"| {kind} | {t['tokens']} | {t['p50_ms']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"report": report, "timing": timing}, indent=2))


if __name__ == "__main__":
    main()
