"""A minimal Faust app for the foundation test: upper-cases values from one topic to another.

Topic and app names come from the environment so each test run uses its own.
"""

import os

import faust

from streams.clients import faust_connection
from streams.faust_support import broker_urls

BOOTSTRAP = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
app = faust.App(
    os.environ["RELAY_APP_ID"],
    broker=broker_urls(BOOTSTRAP),
    store="memory://",
    topic_partitions=1,
    producer_acks=-1,
    **faust_connection("operator", BOOTSTRAP),  # the test's own app: as the operator
)
source = app.topic(os.environ["RELAY_SRC"], value_serializer="raw", key_serializer="raw")
sink = app.topic(os.environ["RELAY_DST"], value_serializer="raw", key_serializer="raw")


@app.agent(source)
async def relay(stream):  # type: ignore[no-untyped-def]
    async for value in stream:
        await sink.send(value=value.upper())
