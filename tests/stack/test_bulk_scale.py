"""10,000 ids through the local stack's API: accepted in 200 messages of at most 50, every id exactly once; the
connection's lane sends two to SQS at once and holds the rest in the job's ledger.

Its own module: one local stack per process at a time, and this one runs without the queue poller so the
messages can be counted where they are.
"""

from __future__ import annotations

import json

import httpx
import pytest

from devstack.stack import EmbeddedStack
from tests.stack.support import C, stack_scenario

pytestmark = pytest.mark.stack


def test_ten_thousand_ids_are_accepted_in_two_hundred_messages() -> None:
    with EmbeddedStack(stack_scenario(), api_port=0, poll_queues=False) as running:
        assert running.api is not None
        ids = [str(2000009500000000 + n) for n in range(10_000)]
        with httpx.Client(base_url=running.api.url, timeout=120) as http:
            response = http.post(f"/connections/{C}/reprocessing-jobs", json={"sale_ids": ids})
            assert response.status_code == 202, response.text
            body = response.json()
            assert (body["accepted"], body["messages"], body["rejected"]) == (10_000, 200, [])
            too_many = http.post(f"/connections/{C}/reprocessing-jobs", json={"sale_ids": [*ids, "2000009600000000"]})
            assert too_many.status_code == 422 and "10000" in too_many.json()["message"]
        sqs = running.aws.client("sqs")
        url = running.aws.physical_id("BulkQueue")
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        # The connection's lane (BulkLaneMessages 2) sent two; the other 198 wait held in the job's ledger.
        assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "2"
        seen: list[str] = []
        sizes: list[int] = []
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                break
            for message in got:
                sale_ids = json.loads(message["Body"])["sale_ids"]
                sizes.append(len(sale_ids))
                seen += sale_ids
        ddb = running.aws.client("dynamodb")
        pages = ddb.get_paginator("query").paginate(
            TableName=running.aws.physical_id("JobsTable"),
            KeyConditionExpression="job_id = :j AND begins_with(item_key, :m)",
            ExpressionAttributeValues={":j": {"S": body["job_id"]}, ":m": {"S": "!m"}},
        )
        messages = [item for page in pages for item in page["Items"]]
        held = [m for m in messages if m["lane_state"]["S"] == "held"]
        assert (len(messages), len(held)) == (200, 198)
        for message in held:
            sale_ids = [v["S"] for v in message["sale_ids"]["L"]]
            sizes.append(len(sale_ids))
            seen += sale_ids
        assert len(sizes) == 200 and max(sizes) == 50
        assert sorted(seen) == sorted(ids)  # every accepted id in exactly one message
