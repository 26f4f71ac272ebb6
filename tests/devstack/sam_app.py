"""A small SAM application on disk for the devstack's own tests: template, one function's handler, one state machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_sam_app(root: Path, *, template: str, function: str, handler: str, asl: dict[str, Any]) -> Path:
    """``root`` holding ``template.yaml``, ``functions/<function>/app.py`` and ``statemachine/machine.asl.json``."""
    (root / "template.yaml").write_text(template)
    (root / "functions" / function).mkdir(parents=True)
    (root / "functions" / function / "app.py").write_text(handler)
    (root / "statemachine").mkdir()
    (root / "statemachine" / "machine.asl.json").write_text(json.dumps(asl, indent=2))
    return root
