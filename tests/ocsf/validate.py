"""Validates OCSF events, one JSON object per line, against the OCSF schema of their
metadata.version and the profiles they declare, with the `ocsf-json-schema` package's schemas
and the `jsonschema` validator.

Usage: validate.py EVENTS.ocsf
Prints {"classes": {class_uid: count}, "invalid": [first errors]} as JSON.
"""
import collections
import json
import sys

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

schemas = {}
validators = {}
classes = collections.Counter()
invalid = []
for number, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    event = json.loads(line)
    version = event["metadata"]["version"]
    profiles = tuple(event["metadata"].get("profiles", []))
    key = (version, event["class_uid"], profiles)
    if key not in validators:
        if version not in schemas:
            schemas[version] = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
        schema = schemas[version]
        name = schema.lookup_class_name_from_uid(class_uid=event["class_uid"])
        validators[key] = Draft202012Validator(
            schema.get_class_schema(class_name=name, profiles=list(profiles))
        )
    errors = list(validators[key].iter_errors(event))
    classes[f'{event["class_uid"]}:{event["activity_id"]}'] += 1
    for error in errors[:3]:
        if len(invalid) < 20:
            invalid.append(
                f"line {number} class {event['class_uid']}: "
                f"{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"
            )
json.dump({"classes": classes, "invalid": invalid}, sys.stdout)
