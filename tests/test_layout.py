"""The folders install as subpackages of `ctxzip`, in editable and in wheel installs."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["compressors", "middleware", "retrievers", "proxy", "evals", "plugins", "mcp_proxy"]


def _setuptools():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_source_folder_is_a_listed_subpackage():
    cfg = _setuptools()
    mapping = cfg["package-dir"]
    for folder in FOLDERS:
        assert mapping[f"ctxzip.{folder}"] == folder
    # every folder holding an __init__.py is listed, or it would vanish from the wheel
    listed = set(cfg["packages"])
    for init in ROOT.glob("*/**/__init__.py"):
        rel = init.parent.relative_to(ROOT)
        top = rel.parts[0]
        if top in FOLDERS and not (top == "plugins" and "example" in rel.parts):
            assert f"ctxzip.{'.'.join(rel.parts)}" in listed, rel


def test_editable_imports_resolve_into_the_repo():
    import ctxzip.compressors.truncate
    import ctxzip.plugins

    assert Path(ctxzip.compressors.truncate.__file__).parent == ROOT / "compressors"
    assert Path(ctxzip.plugins.__file__).parent == ROOT / "plugins"


def test_wheel_has_one_top_level_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ctxzip-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"ctxzip"}
    for folder in FOLDERS:
        assert f"ctxzip/{folder}/__init__.py" in names
    assert "ctxzip/compressors/truncate.py" in names
    # each family's modules and its shipped weights travel with it
    for path in [
        "ctxzip/compressors/token_classification/weights/token_classifier.safetensors",
        "ctxzip/compressors/token_classification/weights/token_classifier.json",
        "ctxzip/compressors/xrag/weights/xrag_minilm_smollm2.safetensors",
        "ctxzip/compressors/xrag/weights/xrag_minilm_smollm2.json",
        "ctxzip/compressors/vision/reader/weights/vision_reader_smollm2.safetensors",
        "ctxzip/compressors/vision/merge.py",
        "ctxzip/compressors/images/billing.py",
        "ctxzip/proxy/prices.toml",  # the default price table
        "ctxzip/corpus.py",
        "ctxzip/py.typed",
    ]:
        assert path in names, path
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".pt", ".bin"))]


def test_trainers_are_found_by_entry_point():
    from importlib.metadata import entry_points

    trainers = {ep.name: ep.value for ep in entry_points(group="ctxzip.trainers")}
    assert set(trainers) >= {"token-classifier", "xrag", "llava"}
    for target in trainers.values():
        module = target.partition(":")[0]
        assert module.startswith("ctxzip.compressors.") and module.endswith(".train"), target
