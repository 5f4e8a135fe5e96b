"""`ctxzip eval --engine ray`: the same summary as a local run, and resuming from the cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctxzip.cli import main

TIMING = ("compress_p50", "compress_p95", "reader_p50", "reader_p95")


def _eval(out: Path, n: int, *extra: str) -> int:
    return main(["eval", "-d", "pyref", "-n", str(n), "-m", "truncate", "--rates", "0.3",
                 "--max-new-tokens", "8", "--batch-size", "4", "--no-progress", "--seed", "3",
                 "-o", str(out), *extra])  # fmt: skip


def _summary(out: Path) -> list[dict[str, Any]]:
    rows = json.loads((out / "summary.json").read_text())["rows"]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _lines(out: Path) -> dict[str, int]:
    return {p.name: len(p.read_text().splitlines()) for p in sorted(out.glob("cache/*.jsonl"))}


def _predictions(out: Path) -> list[str]:
    lines = (out / "items.jsonl").read_text().splitlines()
    return [json.loads(x)["prediction"] for x in lines]


@pytest.mark.slow
@pytest.mark.ray
def test_ray_sweep_matches_local_and_resumes(tmp_path: Path, ray_local: Any) -> None:
    local, remote = tmp_path / "local", tmp_path / "ray"
    ray = ("--engine", "ray", "--workers", "2")
    assert _eval(local, 3) == 0
    expected = _summary(local)
    assert {r["method"] for r in expected} == {"no-context", "full", "truncate", "random"}
    # the Ray run is interrupted after two questions, then resumed with all three
    assert _eval(remote, 2, *ray) == 0
    partial = _lines(remote)
    assert _eval(remote, 3, *ray) == 0
    assert _summary(remote) == expected
    assert _predictions(remote) == _predictions(local)
    assert _lines(remote) == _lines(local) != partial
    # the keys are the engine's own: a local rerun finds everything in the Ray run's cache
    assert _eval(remote, 3) == 0
    assert _lines(remote) == _lines(local) and _summary(remote) == expected
