#!/usr/bin/env python3
"""An independent consumer of Custos's NATS JetStream sink, used by the integration tests.

It reads every message of a stream with nats-py, decodes each as custos.v1.Event with classes
the official protobuf compiler generated from proto/custos/v1 (see custos_consumer.py), and
prints one JSON line per event with its message's subject under "_subject", its id under
"_msg_id" and its Custos-Events header under "_events". A message with that header carries
several events, each after its varint length. It waits until at least EXPECT events whose
file-open path or exec binary is MATCH have arrived, or TIMEOUT seconds.

usage: custos_jetstream.py PROTO_ROOT NATS_URL STREAM MATCH EXPECT TIMEOUT
"""
import asyncio
import json
import os
import sys
import time

import nats
from google.protobuf import json_format

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from custos_consumer import load_event_class  # noqa: E402


def matches(event, match):
    return event.file_open.path == match or (
        event.HasField("exec") and event.process.binary == match
    )


def events_of(event_class, data, framed):
    """The events of a message: the whole of it, or each varint-length-prefixed piece."""
    if not framed:
        return [event_class.FromString(data)]
    events, at = [], 0
    while at < len(data):
        length, shift = 0, 0
        while True:
            byte = data[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        events.append(event_class.FromString(data[at : at + length]))
        at += length
    return events


async def main():
    proto_root, url, stream, match, expect, timeout = sys.argv[1:7]
    event_class = load_event_class(proto_root)
    client = await nats.connect(url)
    js = client.jetstream()
    subscription = await js.pull_subscribe(">", stream=stream)
    deadline = time.monotonic() + float(timeout)
    lines, hits = [], 0
    while hits < int(expect) and time.monotonic() < deadline:
        try:
            messages = await subscription.fetch(1000, timeout=1)
        # nats-py raises its own TimeoutError when no message came, and a bare asyncio one
        # when a pull request's deadline passed while the stream changed leader.
        except asyncio.TimeoutError:
            continue
        for message in messages:
            headers = message.headers or {}
            for event in events_of(event_class, message.data, "Custos-Events" in headers):
                hits += matches(event, match)
                record = json_format.MessageToDict(event)
                record["_subject"] = message.subject
                record["_msg_id"] = headers.get("Nats-Msg-Id", "")
                record["_events"] = headers.get("Custos-Events", "")
                lines.append(json.dumps(record))
            await message.ack()
    await client.close()
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
