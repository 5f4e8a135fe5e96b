import sys

import pytest

from ctxzip import Budget, get_compressor, registry
from ctxzip.errors import PluginError


def test_builtins_and_example_plugin_are_listed():
    infos = {i.name: i for i in registry.available_compressors()}
    assert infos["truncate"].source.startswith("ctxzip ")
    assert infos["noop"].error is None
    # installed by `make test` from plugins/example, through the same entry-point group
    plugin = infos["drop-stopwords"]
    assert plugin.source.startswith("ctxzip-example-plugin ")
    assert plugin.error is None


def test_example_plugin_compresses():
    c = get_compressor("drop-stopwords")
    text = "The cat is on the mat and it is in the sun."
    r = c.compress(text, budget=Budget(rate=0.7))
    assert r.tokens_out <= Budget(rate=0.7).tokens_for(r.tokens_in) < r.tokens_in
    words = r.texts[0].lower().split()
    assert {"cat", "mat", "sun."} <= set(words) and words.count("the") < 3


def test_module_attr_reference():
    c = get_compressor("ctxzip.compressors.truncate:TruncateCompressor", tokenizer="gpt-4")
    assert c.name == "truncate" and c.tokenizer.name.startswith("cl100k_base")


def test_unknown_and_bad_options():
    with pytest.raises(PluginError, match="unknown compressor 'nope'"):
        get_compressor("nope")
    with pytest.raises(PluginError, match="bad options"):
        get_compressor("truncate", no_such_option=1)
    with pytest.raises(PluginError, match="cannot load"):
        get_compressor("no_such_module:Thing")


@pytest.fixture
def broken_plugin(tmp_path):
    """A real installed distribution (dist-info on sys.path) whose code fails to import."""
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ctxzip.compressors]\nbroken = broken_plugin_mod:Nope\n"
    )
    (tmp_path / "broken_plugin_mod.py").write_text("raise RuntimeError('boom at import')\n")
    sys.path.insert(0, str(tmp_path))
    registry.refresh()
    yield
    sys.path.remove(str(tmp_path))
    sys.modules.pop("broken_plugin_mod", None)
    registry.refresh()


def test_broken_plugin_is_reported_not_fatal(broken_plugin):
    infos = {i.name: i for i in registry.available_compressors()}
    assert "boom at import" in infos["broken"].error
    assert infos["truncate"].error is None
    assert "broken" not in registry.compressor_names()
    with pytest.raises(PluginError, match="boom at import"):
        get_compressor("broken")
