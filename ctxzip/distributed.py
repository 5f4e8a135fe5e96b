"""Ray, shared by corpus compression, indexing and eval sweeps (`pip install 'ctxzip[ray]'`).

Two shapes of work run on Ray workers, each worker building its model once:

- `map_rows`: a Ray Data pipeline, rows in, rows out, in input order. The work is a
  class-based `map_batches` over an actor pool, so a worker loads its model in its
  constructor and then streams batches through it.
- `actor_pool`: long-lived actors that answer method calls (the eval sweep hands each one
  the same batches a local run would make, so results match a local run).

Work is named by a ``"module:attr"`` string that each worker imports and calls with
keyword options: the core never imports the parts that use it. `ray_session` connects to
an existing cluster (`address`, or ``RAY_ADDRESS``) or starts a local Ray and stops it
afterwards; inside a running session (a test's, a notebook's) it reuses that one.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ctxzip.errors import CtxzipError

ENGINES = ("local", "ray")
RAY_ADDRESS_ENV = "RAY_ADDRESS"
MAX_BLOCKS = 1000
POS = "_ctxzip_pos"  # carried through Ray to check the order of results

Row = dict[str, Any]
RowsFn = Callable[[list[Row]], list[Row]]


def engine_options(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click options --engine, --address and --workers; `what` says what Ray runs."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        import click

        options = [
            click.option(
                "--engine", type=click.Choice(list(ENGINES)), default="local",
                show_default=True, help=f"ray: {what}.",
            ),
            click.option(
                "--address", default=None,
                help="Ray cluster to use (default $RAY_ADDRESS, else a local Ray started here).",
            ),
            click.option(
                "--workers", type=click.IntRange(min=1), default=None,
                help="Ray workers (default: one per CPU of the cluster).",
            ),
        ]  # fmt: skip
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def import_target(target: str) -> Any:
    """The object a ``"module:attr"`` string names."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise CtxzipError(f"{target!r} is not a 'module:attr' reference")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise CtxzipError(
            f"--engine ray needs Ray: pip install 'ctxzip[ray]' ({exc.__class__.__name__})"
        ) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, connected: to `address` (or ``$RAY_ADDRESS``), else a local instance with
    `num_cpus` CPUs that is shut down on exit. An already initialised Ray is reused as is."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get(RAY_ADDRESS_ENV) or None
    if address:
        ray.init(address=address)  # no other options: Ray Client (ray://) refuses some
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def default_workers(ray: Any, cpus_per_worker: float = 1.0) -> int:
    """As many workers as the cluster's CPUs allow (at least one)."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return max(1, int(cpus // max(cpus_per_worker, 1e-9)))


class RowsWorker:
    """A Ray Data callable class: builds ``factory(**options)`` once, then maps batches.

    The factory returns a function from a list of rows (dicts) to the same number of rows.
    """

    def __init__(self, factory: str, options: Mapping[str, Any]) -> None:
        self.fn: RowsFn = import_target(factory)(**dict(options))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
        rows = batch_rows(batch)
        positions = [r.pop(POS) for r in rows]
        out = self.fn(rows)
        if len(out) != len(rows):
            raise CtxzipError(f"{len(out)} rows out for {len(rows)} rows in")
        return row_columns([{**r, POS: p} for r, p in zip(out, positions, strict=True)])


def batch_rows(batch: Mapping[str, Any]) -> list[Row]:
    """A column batch (dict of arrays) as a list of rows of plain Python values."""
    names = list(batch)
    if not names:
        return []
    n = len(batch[names[0]])
    return [{k: _plain(batch[k][i]) for k in names} for i in range(n)]


def row_columns(rows: Sequence[Row]) -> dict[str, Any]:
    """Rows as a column batch; array-valued columns (vectors) stack into one 2-d array."""
    if not rows:
        return {}
    out: dict[str, Any] = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if isinstance(values[0], np.ndarray):
            out[key] = np.stack(values)
        else:
            arr = np.empty(len(values), dtype=object)
            arr[:] = values
            out[key] = arr
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def map_rows(
    ray: Any,
    rows: Sequence[Row],
    factory: str,
    options: Mapping[str, Any],
    *,
    workers: int,
    batch_size: int,
    cpus_per_worker: float = 1.0,
) -> Iterator[Row]:
    """Rows through ``factory(**options)`` on `workers` Ray actors, yielded in input order.

    Rows must hold flat values (str, int, float, bool, None). Results stream back as
    batches finish, so a caller can write (and checkpoint) them as they come.
    """
    if not rows:
        return
    data = ray.data
    ctx = data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    blocks = min(len(rows), MAX_BLOCKS, max(workers, math.ceil(len(rows) / max(1, batch_size))))
    ds = data.from_items([{**r, POS: i} for i, r in enumerate(rows)], override_num_blocks=blocks)
    ds = ds.map_batches(
        RowsWorker,
        fn_constructor_kwargs={"factory": factory, "options": dict(options)},
        batch_size=batch_size,
        batch_format="numpy",
        compute=data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
    )
    expected = 0
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for row in batch_rows(batch):
            pos = row.pop(POS)
            if pos != expected:  # preserve_order holds; this guards the guarantee
                raise CtxzipError(f"Ray returned row {pos} where {expected} was due")
            expected += 1
            yield row


class Hosted:
    """An object built once on a Ray worker (``factory(**options)``); calls its methods."""

    def __init__(self, factory: str, options: Mapping[str, Any]) -> None:
        self.obj = import_target(factory)(**dict(options))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.obj, method)(*args, **kwargs)


def actor_pool(
    ray: Any,
    factory: str,
    options: Mapping[str, Any],
    *,
    workers: int,
    cpus_per_worker: float = 1.0,
) -> list[Any]:
    """`workers` Ray actors each hosting ``factory(**options)`` (see `Hosted`)."""
    remote = ray.remote(num_cpus=cpus_per_worker)(Hosted)
    return [remote.remote(factory, dict(options)) for _ in range(workers)]


def run_calls(ray: Any, actors: Sequence[Any], calls: Iterable[tuple[Any, ...]]) -> list[Any]:
    """Each call ``(method, *args)`` on the next free actor; results in call order."""
    from ray.util import ActorPool

    pool = ActorPool(list(actors))
    return list(pool.map(lambda actor, call: actor.call.remote(*call), list(calls)))
