"""The API function's SnapStart runtime hooks, run as Lambda runs them (``snapshot_restore_py``'s registries: the
before-snapshot hooks last registered first, the after-restore hooks in order).

Before the snapshot the hooks warm what every restored sandbox may share (modules, schemas, botocore's service
models); after a restore, each sandbox gets its own clients, credentials and random state.
"""

from __future__ import annotations

import gc
import random
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import snapshot_restore_py

from functions.api import app
from shared import snapstart
from shared.wiring import dynamodb_resource

C = "mla-main"


@pytest.fixture(autouse=True)
def unfrozen_afterwards() -> Iterator[None]:
    """The before-snapshot hook freezes the garbage collector's view of the heap (for the snapshot's lifetime); the
    tests that follow in this process get it back."""
    yield
    gc.unfreeze()


def before_snapshot() -> None:
    for hook, args, kwargs in reversed(snapshot_restore_py.get_before_snapshot()):
        hook(*args, **kwargs)


def after_restore() -> None:
    for hook, args, kwargs in snapshot_restore_py.get_after_restore():
        hook(*args, **kwargs)


def test_the_api_module_registers_both_hooks() -> None:
    assert app._before_snapshot in [hook for hook, _, _ in snapshot_restore_py.get_before_snapshot()]
    assert app._after_restore in [hook for hook, _, _ in snapshot_restore_py.get_after_restore()]


def test_before_the_snapshot_lazy_modules_schemas_and_service_models_are_loaded(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_snapshot()

    assert [m for m in (*snapstart.LAZY_MODULES, *app.API_LAZY_MODULES) if m not in sys.modules] == []
    assert snapstart.deferred_models(("shared", "functions")) == []
    assert gc.get_freeze_count() > 0  # the snapshot's heap is out of later collections
    # A restored sandbox builds its clients from service models already in memory: no model file is read again.
    after_restore()
    assert boto3.DEFAULT_SESSION is not None
    loader = boto3.DEFAULT_SESSION._session.get_component("data_loader")
    read: list[str] = []
    load_file = loader.file_loader.load_file

    def counted(path: str) -> Any:
        read.append(path)
        return load_file(path)

    monkeypatch.setattr(loader.file_loader, "load_file", counted)
    for service in snapstart.AWS_SERVICES:
        boto3.client(service)
    dynamodb_resource()
    assert read == []


def test_after_a_restore_clients_credentials_and_randomness_are_the_sandboxs_own(aws: Any, call_api: Any) -> None:
    # Given a sandbox initialised and snapshotted with clients already built (a request served before the snapshot)
    assert call_api("GET", f"/connections/{C}")[0] == 200
    service, resource = app.service(), dynamodb_resource()
    session = boto3.DEFAULT_SESSION
    assert session is not None
    credentials, loader = session.get_credentials(), session._session.get_component("data_loader")
    idempotent_submission = app._idempotent_submission()
    before_snapshot()
    random.seed(1234)  # the random state every sandbox restored from this snapshot would start with
    snapshotted = random.Random(1234)

    # When Lambda restores it
    after_restore()

    # Then nothing built before is used again: new service, resource and client, session and credentials
    assert app.service() is not service
    assert dynamodb_resource() is not resource
    assert dynamodb_resource().meta.client is not resource.meta.client
    assert boto3.DEFAULT_SESSION is not session
    assert boto3.DEFAULT_SESSION.get_credentials() is not credentials
    assert app._idempotent_submission() is not idempotent_submission
    # but the read-only service models are kept
    assert boto3.DEFAULT_SESSION._session.get_component("data_loader") is loader
    # and the global random generator (retry jitter) was seeded afresh, not left at the snapshot's state
    assert [random.random() for _ in range(4)] != [snapshotted.random() for _ in range(4)]
    # and the sandbox serves requests with its new clients
    status, body, _ = call_api("GET", f"/connections/{C}")
    assert status == 200 and body["connection_id"] == C
    assert app.service() is not service
