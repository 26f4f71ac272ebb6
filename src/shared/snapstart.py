"""Lambda SnapStart: what the snapshot should already hold, and what a restored sandbox must make anew.

Lambda runs the function's initialisation once when a version is published, snapshots the sandbox, and starts every
later sandbox of that version from the snapshot. The handler module registers the two runtime hooks
(``snapshot_restore_py``) and calls these:

- ``warm``, before the snapshot: the work every cold start would otherwise repeat and that is the same in every
  sandbox: the modules a request imports lazily, the deferred pydantic schemas (``defer_build``), botocore's service
  models. No request is made and no connection opened.
- ``after_restore``: the state one sandbox must not share with the others restored from the same snapshot. Clients,
  their connection pools and the credentials they resolved are dropped (``shared.wiring.forget_clients``: the next
  request builds them, with the service models already loaded); Python's global random generator is seeded afresh
  (botocore's and our retry jitter draw from it: identical draws in every sandbox would retry in lockstep). uuid4 and
  ``random.Random()`` read ``os.urandom`` when called, so the ids and generators made after the restore differ.
"""

from __future__ import annotations

import gc
import importlib
import random
from collections.abc import Iterable
from typing import Any

# What a request of the API imports only when it needs it (shared.wiring's builders, the ML client and its transport,
# the bulk path's modules): imported before the snapshot, no request pays for it.
LAZY_MODULES = (
    "boto3",
    "boto3.dynamodb.conditions",
    "boto3.dynamodb.types",
    "shared.lifecycle.dynamo",
    "shared.stores.aliases",
    "shared.stores.connections",
    "shared.stores.errors",
    "shared.stores.jobs",
    "shared.stores.products",
    "shared.meli.client",
    "shared.meli.tokens",
    "httpcore",  # httpx imports its transport on the first client, and IDNA on the first URL
    "encodings.idna",
    "shared.ratelimit",
    "shared.escalation",
    "shared.workflow",
    "shared.queue",
)
# Every client the API builds: creating one loads its service model, endpoint rules and retry config into botocore's
# loader, which ``forget_clients`` keeps across the restore.
AWS_SERVICES = ("dynamodb", "sqs", "sns", "stepfunctions", "secretsmanager")


def deferred_models(packages: Iterable[str] = ("shared",)) -> list[Any]:
    """Every pydantic model of ``packages`` whose schema is not built yet (deferred: ``defer_build=True``)."""
    from pydantic import BaseModel

    roots = tuple(packages)
    found, seen = [], set()
    todo: list[type[BaseModel]] = list(BaseModel.__subclasses__())
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        todo.extend(model.__subclasses__())
        if model.__module__.partition(".")[0] in roots and not model.__pydantic_complete__:
            found.append(model)
    return found


def build_deferred_models(packages: Iterable[str] = ("shared",)) -> int:
    """Build now every pydantic model of ``packages`` whose schema was deferred; returns how many were built."""
    models = deferred_models(packages)
    for model in models:
        model.model_rebuild()
    return len(models)


def warm(
    modules: Iterable[str] = LAZY_MODULES,
    services: Iterable[str] = AWS_SERVICES,
    packages: Iterable[str] = ("shared",),
) -> dict[str, Any]:
    """Before the snapshot: import ``modules``, build the deferred schemas of ``packages``' models, load
    ``services``' models (clients are built and dropped: after the restore, requests make their own). Returns what it
    did, for the log."""
    import boto3

    for module in modules:
        importlib.import_module(module)
    models = build_deferred_models(packages)
    for service in services:
        boto3.client(service)
    boto3.resource("dynamodb")  # the resource model too (shared.wiring.dynamodb_resource)
    # Everything built so far lives as long as the sandbox: collect once, then keep it out of every later collection.
    # Otherwise the first full collection after a restore walks the whole snapshot heap (tens of ms, and every page
    # of the snapshot faulted in) in the middle of a request.
    gc.collect()
    gc.freeze()
    return {
        "modules": len(tuple(modules)),
        "models_built": models,
        "services": list(services),
        "frozen": gc.get_freeze_count(),
    }


def after_restore() -> None:
    """After a restore: new clients, connections and credentials on the next request; a freshly seeded ``random``."""
    from shared.wiring import forget_clients

    random.seed()  # from os.urandom, read now: this sandbox's own
    forget_clients()
