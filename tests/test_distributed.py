"""ctxzip.distributed without a cluster: batches as rows and back, targets, a missing Ray."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from ctxzip import distributed
from ctxzip.errors import CtxzipError


def test_rows_and_columns_round_trip() -> None:
    rows = [
        {"row": 0, "text": "a", "vector": np.arange(3, dtype=np.float32), "none": None},
        {"row": 1, "text": "b", "vector": np.ones(3, dtype=np.float32), "none": None},
    ]
    columns = distributed.row_columns(rows)
    assert columns["vector"].shape == (2, 3) and columns["text"].dtype == object
    back = distributed.batch_rows(columns)
    assert [r["text"] for r in back] == ["a", "b"] and back[1]["none"] is None
    assert np.array_equal(back[0]["vector"], rows[0]["vector"])
    assert distributed.batch_rows({"row": np.array([7])})[0]["row"] == 7  # plain int
    assert type(distributed.batch_rows({"row": np.array([7])})[0]["row"]) is int
    assert distributed.row_columns([]) == {} and distributed.batch_rows({}) == []


def test_rows_worker_keeps_positions() -> None:
    w = distributed.RowsWorker.__new__(distributed.RowsWorker)
    w.fn = lambda rows: [{"upper": r["text"].upper()} for r in rows]
    out = w({"text": np.array(["a", "b"], dtype=object), distributed.POS: np.array([4, 5])})
    assert list(out["upper"]) == ["A", "B"] and list(out[distributed.POS]) == [4, 5]
    w.fn = lambda rows: rows[:1]
    with pytest.raises(CtxzipError, match="1 rows out for 2"):
        w({"text": np.array(["a", "b"], dtype=object), distributed.POS: np.array([0, 1])})


def test_import_target() -> None:
    assert distributed.import_target("ctxzip.distributed:import_target") is (
        distributed.import_target
    )
    with pytest.raises(CtxzipError, match="module:attr"):
        distributed.import_target("no-colon")


def test_a_missing_ray_says_what_to_install(monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(CtxzipError, match=r"ctxzip\[ray\]"), distributed.ray_session():
        pass
