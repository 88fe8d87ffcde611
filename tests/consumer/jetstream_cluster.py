#!/usr/bin/env python3
"""Looks at a JetStream stream (on a cluster or one server) with nats-py and sets its limits,
for the integration tests.

usage:
  jetstream_cluster.py leader NATS_URL STREAM TIMEOUT [SERVER]
      waits until STREAM exists, has a leader and every replica is current; with SERVER,
      asks the leader to step down until SERVER leads; prints the leader's server name.
  jetstream_cluster.py ids NATS_URL STREAM TIMEOUT < EXPECTED
      reads the stream until every message id listed on standard input (one per line) was
      seen or TIMEOUT seconds passed, then on until two seconds pass without a message;
      prints one JSON object: the stream's message count and every message id read, in the
      stream's order.
  jetstream_cluster.py limit NATS_URL STREAM TIMEOUT MAX_MSGS
      creates STREAM for subjects custos.> (or updates it) to hold at most MAX_MSGS messages
      (-1: no limit) and to refuse new ones once full; prints the limit in force.
"""
import asyncio
import json
import sys
import time

import nats
import nats.js.errors
from nats.js.api import DiscardPolicy, StreamConfig


async def leader(js, stream, deadline):
    while time.monotonic() < deadline:
        try:
            info = await js.stream_info(stream)
        except Exception:  # not created yet, or no leader elected yet
            await asyncio.sleep(0.2)
            continue
        cluster = info.cluster
        replicas = (cluster.replicas or []) if cluster else []
        current = all(r.current for r in replicas)
        if cluster and cluster.leader and len(replicas) == 2 and current:
            return cluster.leader
        await asyncio.sleep(0.2)
    raise SystemExit(f"stream {stream} has no leader with two current replicas")


async def retried(request, deadline):
    """The request's result, retried while the cluster elects a new leader."""
    while True:
        try:
            return await request()
        except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def lead_from(client, js, stream, server, deadline):
    """Moves the stream's leadership to `server` by asking leaders to step down."""
    current = await leader(js, stream, deadline)
    while current != server:
        if time.monotonic() > deadline:
            raise SystemExit(f"{server} never became the leader of {stream}")
        subject = f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}"
        await retried(lambda: client.request(subject, b"", timeout=5), deadline)
        await asyncio.sleep(0.5)
        current = await leader(js, stream, deadline)
    return current


async def ids(js, stream, deadline, expected):
    subscription = await retried(lambda: js.pull_subscribe(">", stream=stream), deadline)
    seen, missing = [], set(expected)
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        if not missing and time.monotonic() - idle_since > 2:
            break
        try:
            messages = await subscription.fetch(1000, timeout=1)
        # nats-py raises its own TimeoutError when no message came, and a bare asyncio one
        # when a pull request's deadline passed while the stream changed leader.
        except asyncio.TimeoutError:
            continue
        idle_since = time.monotonic()
        for message in messages:
            msg_id = (message.headers or {}).get("Nats-Msg-Id", "")
            seen.append(msg_id)
            missing.discard(msg_id)
            await message.ack()
    info = await retried(lambda: js.stream_info(stream), deadline + 30)
    return {"stream_messages": info.state.messages, "ids": seen}


async def limit(js, stream, max_msgs):
    config = StreamConfig(
        name=stream,
        subjects=["custos.>"],
        max_msgs=max_msgs,
        discard=DiscardPolicy.NEW,
    )
    try:
        info = await js.update_stream(config)
    except nats.js.errors.NotFoundError:
        info = await js.add_stream(config)
    return info.config.max_msgs


async def main():
    command, url, stream, timeout = sys.argv[1:5]
    deadline = time.monotonic() + float(timeout)
    client = await nats.connect(url.split(","))
    js = client.jetstream()
    if command == "leader" and len(sys.argv) > 5:
        print(await lead_from(client, js, stream, sys.argv[5], deadline))
    elif command == "leader":
        print(await leader(js, stream, deadline))
    elif command == "limit":
        print(await limit(js, stream, int(sys.argv[5])))
    else:
        expected = [line.strip() for line in sys.stdin if line.strip()]
        print(json.dumps(await ids(js, stream, deadline, expected)))
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
