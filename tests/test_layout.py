"""The folders install as subpackages of `ctxzip`, in editable and in wheel installs."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["compressors", "middleware", "retrievers", "proxy", "evals", "plugins"]


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
