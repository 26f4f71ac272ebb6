"""Builds the shared layer with its bytecode: what ``sam build`` runs for ``SharedLayer`` (this folder's Makefile).

SAM's own Python builder (``BuildMethod: python3.12``) unpacks the requirements' wheels and copies ``shared``: no
``.pyc`` at all, and SAM's zip gives every file the same 1980 date, so even a timestamp-based ``.pyc`` would be
stale on arrival (aws/aws-lambda-builders#924). ``/opt`` is read-only, so Lambda compiled every module of the layer
(pydantic, Powertools, httpx, boto3 and botocore, which the layer pins and which so come before the runtime's own, and
``shared``) on every cold start, and threw the result away.

This build installs the same pins for the runtime's platform, copies ``shared`` and compiles all of it with
**unchecked-hash** bytecode (PEP 552): a ``.pyc`` that Python loads without comparing it to its source, neither by
date nor by hash. That is safe here because nothing in a published layer version ever changes. The bytecode is
specific to one Python minor version, so it is compiled by the runtime's version (3.12 for ``python3.12``): a
``.pyc`` of another version would be ignored, and the module compiled again on every cold start.

    python3.12 build_layer.py --target "$ARTIFACTS_DIR/python"

``--platform native --python-version 3.11`` builds the same layer for this machine (``benchmarks/cold_start.py``
measures the functions on it); ``--no-bytecode`` builds it as SAM's Python builder did, to measure the difference.
"""

from __future__ import annotations

import argparse
import compileall
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The template's runtime and architecture (python3.12 on arm64); tests/security/test_layer_build.py keeps them equal.
RUNTIME_PYTHON = "3.12"
RUNTIME_PLATFORM = "manylinux2014_aarch64"
LAYER_ROOT = "/opt"  # where Lambda extracts a layer: its python/ is /opt/python, on sys.path


class BuildError(Exception):
    pass


def build(
    target: Path,
    *,
    python_version: str = RUNTIME_PYTHON,
    platform: str = RUNTIME_PLATFORM,
    bytecode: bool = True,
    requirements: Path = HERE / "requirements.txt",
    shared: Path = HERE / "shared",
) -> int:
    """Fills ``target`` (the layer's ``python/`` folder) and returns how many modules were compiled."""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if bytecode and running != python_version:
        raise BuildError(
            f"this Python is {running}, the layer is for {python_version}: bytecode only loads on the version that "
            f"compiled it; run this script with python{python_version}"
        )
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    install(target, requirements, python_version=python_version, platform=platform)
    shutil.copytree(shared, target / "shared", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts (httpx's CLI): nothing in Lambda runs them
    return compile_layer(target) if bytecode else 0


def install(target: Path, requirements: Path, *, python_version: str, platform: str) -> None:
    """The pinned requirements as wheels for the runtime (no source builds), without pip's timestamp bytecode."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    command += ["--root-user-action=ignore"]
    command += ["--only-binary=:all:", "--target", str(target), "-r", str(requirements)]
    if platform != "native":
        command += ["--platform", platform, "--implementation", "cp", "--python-version", python_version]
    subprocess.run(command, check=True)


def compile_layer(target: Path) -> int:
    """Unchecked-hash bytecode for every module, named by the path Lambda will show in tracebacks (/opt/python/...)."""
    ok = compileall.compile_dir(
        target,
        quiet=1,
        workers=0,  # one process per core
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        stripdir=str(target.parent),
        prependdir=LAYER_ROOT,
    )
    if not ok:
        raise BuildError(f"some modules under {target} did not compile (listed above)")
    return sum(1 for _ in target.rglob("__pycache__/*.pyc"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=Path, required=True, help="the layer's python/ folder (emptied first)")
    parser.add_argument("--python-version", default=RUNTIME_PYTHON, help="the runtime's Python (major.minor)")
    parser.add_argument("--platform", default=RUNTIME_PLATFORM, help="wheels' platform tag, or 'native'")
    parser.add_argument("--no-bytecode", action="store_true", help="ship sources only (as SAM's Python builder)")
    args = parser.parse_args(argv)
    try:
        compiled = build(
            args.target, python_version=args.python_version, platform=args.platform, bytecode=not args.no_bytecode
        )
    except (BuildError, subprocess.CalledProcessError) as error:
        print(f"build_layer: {error}", file=sys.stderr)
        return 1
    what = f"{compiled} modules compiled (unchecked-hash, Python {args.python_version})" if compiled else "no bytecode"
    print(f"build_layer: {args.target}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
