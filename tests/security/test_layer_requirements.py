"""Issue 12, case 9: the shared layer must not ship a botocore that does not match its boto3.

A layer's packages come before the runtime's on Lambda's sys.path. aws-xray-sdk (Powertools' tracer extra) depends
on botocore alone: a layer holding that botocore but no boto3 makes the runtime's boto3 run on a botocore it was not
released with. The layer pins the pair instead (src/layer/requirements.txt says why).

What pip would install for the layer is worked out from the installed distributions' metadata (offline; only the
registries are reachable here, and the dev venv holds exactly the layer's pins, checked first), with markers
evaluated for the template's Lambda runtime.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devstack.template import ROOT, load_template

LAYER_REQUIREMENTS = ROOT / "src" / "layer" / "requirements.txt"
DEV_REQUIREMENTS = ROOT / "requirements.txt"  # what the dev venv (and so every test) is built from


def pins(path: Path) -> dict[str, Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {canonicalize_name(r.name): r for r in map(Requirement, filter(None, lines))}


def pinned(requirement: Requirement) -> str:
    (spec,) = requirement.specifier
    assert spec.operator == "==", f"{requirement}: the layer pins exact versions"
    return spec.version


def lambda_environment() -> dict[str, str]:
    runtime = load_template()["Globals"]["Function"]["Runtime"]  # e.g. python3.12
    version = runtime.removeprefix("python")
    return {
        "python_version": version,
        "python_full_version": f"{version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def resolved(roots: dict[str, Requirement]) -> dict[str, list[tuple[str, Requirement]]]:
    """Every distribution the layer gets -> who requires it, and with what specifier."""
    environment = lambda_environment()
    found: dict[str, list[tuple[str, Requirement]]] = {}
    expanded: set[tuple[str, str]] = set()
    todo: list[tuple[str, Requirement]] = [("layer", r) for r in roots.values()]
    while todo:
        by, requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        found.setdefault(name, []).append((by, requirement))
        for extra in ("", *requirement.extras):
            if (name, extra) in expanded:
                continue
            expanded.add((name, extra))
            for line in metadata.requires(name) or []:
                child = Requirement(line)
                if (child.marker is not None and "extra" in str(child.marker)) != bool(extra):
                    continue  # the base requirements once, each extra's own under that extra
                if child.marker is None or child.marker.evaluate({**environment, "extra": extra}):
                    todo.append((name, child))
    return found


def test_the_tests_run_on_the_layers_pins() -> None:
    layer = pins(LAYER_REQUIREMENTS)
    assert {n: str(r) for n, r in pins(DEV_REQUIREMENTS).items()} == {n: str(r) for n, r in layer.items()}
    for name, requirement in layer.items():
        assert metadata.version(name) == pinned(requirement), f"the dev venv has another {name}: run make venv"


def test_the_layer_ships_botocore_only_with_the_boto3_it_was_released_with() -> None:
    layer = pins(LAYER_REQUIREMENTS)
    shipped = resolved(layer)
    if "botocore" not in shipped:
        return  # the runtime's own pair is used untouched
    pullers = sorted({by for by, _ in shipped["botocore"]} - {"layer"})
    for name in ("boto3", "botocore"):
        assert name in layer, f"{pullers} pull botocore into the layer: pin boto3 and botocore there as a pair"
    assert metadata.version("boto3") == pinned(layer["boto3"])  # its metadata is the pinned one's
    botocore = pinned(layer["botocore"])
    wanted_by = {by for by, _ in shipped["botocore"]}
    assert "boto3" in wanted_by
    for by, requirement in shipped["botocore"]:  # boto3's own range (>=1.44.8,<1.45.0) above all
        assert requirement.specifier.contains(botocore), f"{by} wants botocore{requirement.specifier}, not {botocore}"
