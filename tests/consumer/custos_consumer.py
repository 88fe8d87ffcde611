#!/usr/bin/env python3
"""An independent consumer of Custos's TCP stream, used by the integration tests.

It compiles proto/custos/v1/events.proto with the official protobuf compiler (grpcio-tools),
then reads a byte stream in protobuf's delimited format (a varint length before each message,
as parseDelimitedFrom reads it) with the official Python runtime, and prints each event as one
line of JSON. Nothing here comes from Custos's own code.

usage: custos_consumer.py PROTO_ROOT STREAM_FILE
"""
import importlib
import importlib.resources
import json
import sys
import tempfile

from google.protobuf import json_format
from google.protobuf.internal.decoder import _DecodeVarint32
from grpc_tools import protoc


def load_event_class(proto_root):
    out = tempfile.mkdtemp(prefix="custos-consumer-")
    # The well-known types (google/protobuf/timestamp.proto) ship with grpcio-tools.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"{proto_root}/custos/v1/events.proto",
        ]
    )
    if status != 0:
        sys.exit(f"protoc failed with {status}")
    sys.path.insert(0, out)
    return importlib.import_module("custos.v1.events_pb2").Event


def main():
    event_class = load_event_class(sys.argv[1])
    data = open(sys.argv[2], "rb").read()
    position = 0
    while position < len(data):
        size, position = _DecodeVarint32(data, position)
        if position + size > len(data):
            sys.exit(f"stream ends inside a {size}-byte message at byte {position}")
        event = event_class.FromString(data[position : position + size])
        position += size
        print(json.dumps(json_format.MessageToDict(event)))


if __name__ == "__main__":
    main()
