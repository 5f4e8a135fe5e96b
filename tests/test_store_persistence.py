"""Crash safety (a saving process killed with SIGKILL) and concurrent readers and writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from ctxzip.retrievers import FaissStore

DIM = 64

SAVER = textwrap.dedent(
    """
    import sys
    import time
    import numpy as np
    from ctxzip.retrievers import FaissStore

    path, kind = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    store = FaissStore(dim=64, index=kind)  # vectors given: the model is never loaded
    n = 0
    while True:
        batch = 3000
        ids = [f"d{n + i}" for i in range(batch)]
        store.add_texts([f"document {i} " + "lorem ipsum " * 40 for i in ids],
                        [{"n": n + i} for i in range(batch)], ids,
                        vectors=rng.normal(size=(batch, 64)))
        n += batch
        print("saving", flush=True)
        t = time.perf_counter()
        store.save(path)
        print("saved", n, time.perf_counter() - t, flush=True)
    """
)


def _check_loadable(path) -> int:
    store = FaissStore.load(path)  # verifies checksums and counts against the manifest
    manifest = json.loads((path / "manifest.json").read_text())
    n = len(store)
    assert n == manifest["counts"]["documents"] and n % 3000 == 0 and n > 0
    last = f"d{n - 1}"
    assert store.get([last])[0].metadata == {"n": n - 1}
    hit = store.search_by_vector(store.get_vectors([last])[0], k=1)[0]
    assert hit.id == last
    return n


@pytest.mark.parametrize("kind", ["flat"])  # the save path is the same for every index type
def test_killed_save_leaves_previous_copy_loadable(tmp_path, kind):
    path = tmp_path / "store"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    interrupted = 0
    rng = np.random.default_rng(1)
    for _round in range(4):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), kind], stdout=subprocess.PIPE, text=True
        )
        try:
            line = proc.stdout.readline()
            while not line.startswith("saved"):  # let one save complete
                assert line, "the saving process died"
                line = proc.stdout.readline()
            seconds = float(line.split()[2])
            while not line.startswith("saving"):  # then kill inside the next one
                assert line, "the saving process died"
                line = proc.stdout.readline()
            time.sleep(float(rng.uniform(0.05, 0.95)) * seconds)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        manifest = json.loads((path / "manifest.json").read_text())
        current = f"gen-{manifest['generation']:06d}"
        leftovers = [
            p.name
            for p in path.iterdir()
            if p.name.startswith((".tmp-gen-", "gen-", "manifest.json.tmp")) and p.name != current
        ]
        interrupted += bool(leftovers)
        _check_loadable(path)
    # The test means something only if some kill landed in the middle of a save.
    assert interrupted >= 1
    store = FaissStore.load(path)
    store.save()  # the next save clears what dead saves left behind
    assert sorted(p.name for p in path.iterdir() if not p.name.startswith(".lock")) == [
        f"gen-{json.loads((path / 'manifest.json').read_text())['generation']:06d}",
        "manifest.json",
    ]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_readers_during_writes_see_no_corruption_and_lose_nothing(tmp_path, kind):
    rng = np.random.default_rng(2)
    options = {"train_min": 600, "pq_m": 16, "pq_bits": 6} if kind == "ivfpq" else {}
    store = FaissStore(dim=DIM, index=kind, **options)
    batches = [
        (f"b{b}-{i}", rng.normal(size=DIM).astype(np.float32)) for b in range(40) for i in range(25)
    ]
    written: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for start in range(0, len(batches), 25):
                part = batches[start : start + 25]
                store.add_texts(
                    [f"text of {i}" for i, _ in part],
                    [{"id": i} for i, _ in part],
                    [i for i, _ in part],
                    vectors=np.stack([v for _, v in part]),
                )
                written.update(part)
                if start % 200 == 0:
                    store.delete([part[0][0]])
                    written.pop(part[0][0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            q = np.random.default_rng(threading.get_ident() % 2**32)
            while not done.is_set():
                for hit in store.search_by_vector(q.normal(size=DIM), k=5):
                    assert hit.text == f"text of {hit.id}" and hit.metadata["id"] == hit.id
                for hit in store.search_by_vector(
                    q.normal(size=DIM), k=3, filter={"id": {"$ne": "x"}}
                ):
                    assert hit.text == f"text of {hit.id}"
                if len(store):
                    some = store.ids_where()[:3]
                    docs = store.get(some)
                    assert all(d is None or d.text == f"text of {d.id}" for d in docs)
        except BaseException as exc:
            errors.append(exc)

    def saver() -> None:
        try:
            while not done.is_set():
                store.save(tmp_path / "live")
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (writer, reader, reader, reader, saver)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(store) == len(written) == 1000 - 5
    assert sorted(store.ids_where()) == sorted(written)
    sample = sorted(written)[::37]
    np.testing.assert_array_equal(store.get_vectors(sample), np.stack([written[i] for i in sample]))
    if kind != "ivfpq":  # exact for Flat, near-exact for HNSW on 1k points
        found = [store.search_by_vector(written[i], k=1)[0].id for i in sample]
        assert found == sample
    else:
        assert store.stats()["index_active"] == "ivfpq"
    store.save(tmp_path / "final")
    assert sorted(FaissStore.load(tmp_path / "final").ids_where()) == sorted(written)
