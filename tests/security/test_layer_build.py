"""The shared layer ships its bytecode, and Lambda can use it (src/layer/build_layer.py says why it must).

- The template builds the layer with its Makefile, for the template's runtime and architecture.
- The deploy's own build (``make build-SharedLayer``, as ``sam build`` runs it) gives arm64 wheels for python3.12 and
  an unchecked-hash ``.pyc`` of that version for every module, named by its path in Lambda (``/opt/python/...``),
  and stays within Lambda's 250 MB unzipped for a function and its layers.
- Every handler, imported in a fresh interpreter from such a layer whose files all carry SAM's 1980 zip date, compiles
  no module of the layer; the same check does see the compiling once the bytecode is taken away (so it can fail).

The builds install the pinned wheels with pip (from the package registry, or pip's cache).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.template import ROOT, load_template
from layer.build_layer import LAYER_ROOT, RUNTIME_PLATFORM, RUNTIME_PYTHON, build

LAYER = ROOT / "src" / "layer"
FUNCTIONS = sorted(p.name for p in (ROOT / "src" / "functions").iterdir() if (p / "app.py").exists())
SAM_ZIP_DATE = 315532800  # 1980-01-01T00:00:00Z: the date SAM's zip gives every file (aws-lambda-builders#924)


def test_the_template_builds_the_layer_with_its_makefile_for_the_functions_runtime() -> None:
    template = load_template()
    layer = template["Resources"]["SharedLayer"]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert "build-SharedLayer:" in (LAYER / "Makefile").read_text().splitlines()

    runtime = template["Globals"]["Function"]["Runtime"]
    assert runtime == f"python{RUNTIME_PYTHON}"
    assert layer["Properties"]["CompatibleRuntimes"] == [runtime]
    arch = {"arm64": "aarch64", "x86_64": "x86_64"}
    (architecture,) = layer["Properties"]["CompatibleArchitectures"]
    assert template["Globals"]["Function"]["Architectures"] == [architecture]
    assert RUNTIME_PLATFORM.endswith(f"_{arch[architecture]}")


def runtime_python() -> str | None:
    """A python of the runtime's version, as `sam build` needs one on PATH (pyenv keeps it out of PATH here)."""
    candidates = [shutil.which(f"python{RUNTIME_PYTHON}")]
    candidates += sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{RUNTIME_PYTHON}.*/bin/python3"))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True)
        if probe.returncode == 0 and probe.stdout.decode().strip() == str(tuple(map(int, RUNTIME_PYTHON.split(".")))):
            return candidate
    return None


# Run by the runtime's python over a built layer: what is not as Lambda needs it.
CHECK_BYTECODE = r"""
import importlib.util, json, marshal, pathlib, sys
root, expected_root = pathlib.Path(sys.argv[1]), sys.argv[2]
problems, checked = [], 0
for source in root.rglob("*.py"):
    cached = pathlib.Path(importlib.util.cache_from_source(str(source)))
    if not cached.exists():
        problems.append(f"no bytecode: {source}")
        continue
    data = cached.read_bytes()
    checked += 1
    if data[:4] != importlib.util.MAGIC_NUMBER:
        problems.append(f"another Python's bytecode: {cached}")
    elif int.from_bytes(data[4:8], "little") != 0b01:  # hash-based, source not checked (PEP 552)
        problems.append(f"not unchecked-hash: {cached}")
    elif not marshal.loads(data[16:]).co_filename.startswith(expected_root + "/"):
        problems.append(f"named {marshal.loads(data[16:]).co_filename}: {cached}")
print(json.dumps({"checked": checked, "problems": problems[:20]}))
"""


def test_the_deploy_build_ships_unchecked_hash_bytecode_of_the_runtimes_python(tmp_path: Path) -> None:
    python = runtime_python()
    if python is None:
        pytest.skip(f"no python{RUNTIME_PYTHON} here: `sam build` needs one too")
    artifacts = tmp_path / "artifacts"
    make = ["make", "--no-print-directory", "-C", str(LAYER), "build-SharedLayer"]
    subprocess.run([*make, f"ARTIFACTS_DIR={artifacts}", f"LAYER_PYTHON={python}"], check=True, capture_output=True)
    site = artifacts / "python"
    assert (site / "shared" / "lifecycle").is_dir()
    assert not (site / "bin").exists()
    binaries = [p.name for p in site.rglob("*.so")]
    assert "_pydantic_core.cpython-312-aarch64-linux-gnu.so" in binaries, binaries  # the runtime's wheels
    assert all("aarch64" in name for name in binaries), binaries

    report = json.loads(
        subprocess.run(
            [python, "-c", CHECK_BYTECODE, str(site), f"{LAYER_ROOT}/python"], check=True, capture_output=True
        ).stdout
    )
    assert report["problems"] == []
    assert report["checked"] > 500  # the packages and shared, not a handful

    # Lambda: a function and its layers take at most 250 MB unzipped (the largest function folder is a few KB).
    unzipped = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    largest_function = max(
        sum(p.stat().st_size for p in folder.rglob("*.py")) for folder in (ROOT / "src" / "functions").iterdir()
    )
    assert unzipped + largest_function < 250 * 1000 * 1000, unzipped


def test_building_bytecode_with_another_python_than_the_runtimes_is_refused(tmp_path: Path) -> None:
    from layer.build_layer import BuildError

    other = "3.99"
    with pytest.raises(BuildError, match=r"bytecode only loads on the version that compiled it"):
        build(tmp_path / "python", python_version=other)
    assert not (tmp_path / "python").exists()  # refused before anything was written


# Imports one handler as Lambda does (its folder, then the layer) and lists what was compiled from source.
COMPILED_ON_IMPORT = r"""
import importlib._bootstrap_external as external, json, sys
compiled = []
original = external.SourceLoader.source_to_code
def source_to_code(self, data, path, *, _optimize=-1):
    compiled.append(path)
    return original(self, data, path, _optimize=_optimize)
external.SourceLoader.source_to_code = source_to_code
sys.path.insert(0, sys.argv[1])
import app, shared
print(json.dumps({"compiled": compiled, "shared": shared.__file__, "xray": "aws_xray_sdk" in sys.modules}))
"""


def compiled_on_import(function: str, *layers: Path) -> tuple[list[str], str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(map(str, layers)),
        "PYTHONDONTWRITEBYTECODE": "1",  # /var/task and /opt are read-only
        # In Lambda with Tracing: Active, so the tracer's imports are in the check too.
        "AWS_LAMBDA_FUNCTION_NAME": f"sales-recovery-test-{function}",
        "_X_AMZN_TRACE_ID": "Root=1-6745f2ac-7c1e2f3a4b5c6d7e8f901234;Parent=53995c3f42cd8ad8;Sampled=1",
    }
    env.pop("POWERTOOLS_TRACE_DISABLED", None)
    done = subprocess.run(
        [sys.executable, "-c", COMPILED_ON_IMPORT, str(ROOT / "src" / "functions" / function)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["xray"], "the tracer was not active"
    return answer["compiled"], answer["shared"]


@pytest.fixture(scope="module")
def native_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same build for this machine's Python and platform, every file dated as SAM's zip dates it."""
    site = tmp_path_factory.mktemp("layer") / "python"
    build(site, python_version=f"{sys.version_info.major}.{sys.version_info.minor}", platform="native")
    for path in site.rglob("*"):
        os.utime(path, (SAM_ZIP_DATE, SAM_ZIP_DATE), follow_symlinks=False)
    return site


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_module_of_the_layer_is_compiled_when_a_handler_is_imported(native_layer: Path, function: str) -> None:
    compiled, shared = compiled_on_import(function, native_layer)
    assert shared.startswith(str(native_layer))  # the layer's shared, not src/
    assert [path for path in compiled if path.startswith(str(native_layer))] == []


def test_without_the_bytecode_the_same_import_compiles_the_layer(native_layer: Path, tmp_path: Path) -> None:
    bare = tmp_path / "python"
    shutil.copytree(native_layer / "shared", bare / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    compiled, _ = compiled_on_import("verify", bare, native_layer)  # shared without bytecode first
    assert str(bare / "shared" / "models.py") in compiled
