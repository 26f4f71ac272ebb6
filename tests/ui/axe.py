"""axe-core, the accessibility engine, from its npm package: a pinned version whose tarball must match npm's sha512.

Fetched once from registry.npmjs.org into ``.cache/`` (gitignored) and checked on every use, rather than vendored: the
repository does not carry 560 KB of someone else's minified code (MPL-2.0), and the pin plus the checksum make the
fetched copy exactly as reproducible as a vendored one. Without network on a first run the test fails and says so.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import httpx

from tests.conftest import ROOT

AXE_VERSION = "4.14.1"
AXE_TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
# npm's dist.integrity for that tarball (`npm view axe-core@4.14.1 dist.integrity`).
AXE_INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
CACHE = ROOT / ".cache" / f"axe-core-{AXE_VERSION}.tgz"


class AxeUnavailable(RuntimeError):
    pass


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def axe_source(cache: Path = CACHE) -> str:
    """``axe.min.js`` of the pinned axe-core, verified against npm's checksum."""
    data = cache.read_bytes() if cache.exists() else b""
    if _integrity(data) != AXE_INTEGRITY:
        try:
            data = httpx.get(AXE_TARBALL, timeout=60, follow_redirects=True).raise_for_status().content
        except httpx.HTTPError as exc:
            raise AxeUnavailable(f"cannot fetch {AXE_TARBALL} ({exc}); the accessibility check needs it once") from exc
        if _integrity(data) != AXE_INTEGRITY:
            raise AxeUnavailable(f"{AXE_TARBALL} does not match its pinned checksum {AXE_INTEGRITY}")
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(data)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        member = tar.extractfile("package/axe.min.js")
        assert member is not None
        return member.read().decode("utf-8")
