import json
import os
import subprocess
import sys

import pytest

TEXT = "Paris is the capital of France. It has many museums. The Louvre is the largest one.\n"


def run(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "ctxzip.cli", *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )


def test_help_everywhere():
    top = run("--help")
    assert top.returncode == 0 and b"compress" in top.stdout and b"plugins" in top.stdout
    for cmd in ["compress", "plugins", "demo", "index", "search", "proxy", "eval"]:
        r = run(cmd, "--help")
        assert r.returncode == 0, (cmd, r.stderr)
        assert b"Usage:" in r.stdout


def test_compress_stdin_text_and_stats():
    r = run("compress", "--method", "truncate", "--rate", "0.5", "-", stdin=TEXT.encode())
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode().strip()
    assert TEXT.startswith(out) and len(out) < len(TEXT)
    stats = r.stderr.decode().strip().splitlines()
    assert len(stats) == 1 and "tokens" in stats[0] and "ratio" in stats[0]


def test_compress_file_json(tmp_path):
    f = tmp_path / "docs.txt"
    f.write_text("First document here.\n---\nSecond document, a bit longer than the first one.\n")
    r = run("compress", "-m", "noop", "--target-tokens", "5", "--json", "--model", "gpt-4", str(f))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["texts"] == [
        "First document here.",
        "Second document, a bit longer than the first one.",
    ]
    assert data["tokenizer"].startswith("cl100k_base") and data["method"] == "noop"


@pytest.mark.parametrize(
    "args",
    [
        ["compress", "-m", "truncate", "-"],  # no budget
        ["compress", "-m", "truncate", "--rate", "0.5", "--target-tokens", "3", "-"],  # both
        ["compress", "-m", "truncate", "--rate", "1.5", "-"],  # out of range
        ["compress", "-m", "truncate", "--rate", "abc", "-"],  # not a number
        ["compress", "--rate", "0.5", "-"],  # no method
        ["nosuchcommand"],
    ],
)
def test_usage_errors_exit_2_with_one_line(args):
    r = run(*args, stdin=TEXT.encode())
    assert r.returncode == 2, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctxzip: error:")


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["compress", "-m", "nope", "--rate", "0.5", "-"], TEXT.encode(), "unknown compressor"),
        (
            ["compress", "-m", "truncate", "--rate", "0.5", "-"],
            b"caf\xe9 latin-1",
            "not valid UTF-8",
        ),
        (
            ["compress", "-m", "truncate", "--rate", "0.5", "--model", "no-org/no-model", "-"],
            TEXT.encode(),
            "no-org/no-model",
        ),
    ],
)
def test_failures_exit_1_with_one_line(args, stdin, message):
    r = run(*args, stdin=stdin)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr.decode()


def test_debug_shows_traceback():
    r = run("--debug", "compress", "-m", "nope", "--rate", "0.5", "-", stdin=TEXT.encode())
    assert r.returncode == 1 and b"Traceback" in r.stderr


def test_empty_input_is_a_usage_error():
    r = run("compress", "-m", "truncate", "--rate", "0.5", "-", stdin=b"  \n")
    assert r.returncode == 2 and b"empty" in r.stderr


def test_plugins_lists_origins():
    r = run("plugins", "--json")
    assert r.returncode == 0
    entries = {e["name"]: e for e in json.loads(r.stdout)}
    assert entries["truncate"]["source"].startswith("ctxzip ")
    assert entries["drop-stopwords"]["source"].startswith("ctxzip-example-plugin")
