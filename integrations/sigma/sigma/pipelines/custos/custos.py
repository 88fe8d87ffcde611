"""The Custos pipeline.

Custos writes one event per line in protobuf's canonical JSON. Queried as flat records, a
field is its dotted path (`process.binary`, `fileOpen.path`) and a list of strings is its items
joined by single spaces (`process.args` is the command line). `kind` names the event's family.
"""
from sigma.processing.conditions import (
    ExcludeFieldCondition,
    IncludeFieldCondition,
    LogsourceCondition,
)
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    AddConditionTransformation,
    ChangeLogsourceTransformation,
    DetectionItemFailureTransformation,
    FieldMappingTransformation,
    ReplaceStringTransformation,
    RuleFailureTransformation,
)

# Fields every category shares: the program, its parent, the identity and the session.
PROCESS_FIELDS = {
    # The program as resolved by the kernel, or the path it was invoked by (a symlink such
    # as /usr/bin/awk -> mawk, or a script run by its interpreter).
    "Image": ["process.binary", "process.invokedPath"],
    "CommandLine": "process.args",
    "CurrentDirectory": "process.cwd",
    "ProcessId": "process.pid",
    "ParentProcessId": "process.ppid",
    "User": "identity.euser",
    "LogonId": "identity.sessionId",
}

# process_creation: the exec event also carries the parent's image.
PROCESS_CREATION_FIELDS = {
    **PROCESS_FIELDS,
    "ParentImage": ["exec.parent.binary", "exec.parent.invokedPath"],
    "ParentCommandLine": "exec.parent.args",
}

FILE_EVENT_FIELDS = {
    **PROCESS_FIELDS,
    "TargetFilename": "fileOpen.path",
}

NETWORK_CONNECTION_FIELDS = {
    **PROCESS_FIELDS,
    "DestinationIp": "network.remoteAddress",
    "DestinationPort": "network.remotePort",
    "SourceIp": "network.localAddress",
    "SourcePort": "network.localPort",
    "Protocol": "network.protocol",
    "Initiated": "network.operation",
}

# Each category: its fields, and the condition that selects its events.
CATEGORIES = {
    "process_creation": (PROCESS_CREATION_FIELDS, {"kind": "exec"}),
    # A file_event is an open that created the file.
    "file_event": (FILE_EVENT_FIELDS, {"kind": "file_open", "fileOpen.access.create": True}),
    "network_connection": (NETWORK_CONNECTION_FIELDS, {"kind": "network"}),
}

# Every Custos field the pipeline produces.
CUSTOS_FIELDS = sorted(
    {
        *(
            target
            for fields, _ in CATEGORIES.values()
            for value in fields.values()
            for target in (value if isinstance(value, list) else [value])
        ),
        *(name for _, condition in CATEGORIES.values() for name in condition),
    }
)


def _linux(category):
    """A fresh rule condition (pySigma binds each condition object to one item)."""
    return [LogsourceCondition(category=category, product="linux")]


def _category_items(category, fields, condition):
    return [
        ProcessingItem(
            identifier=f"custos_{category}_kind",
            transformation=AddConditionTransformation(condition),
            rule_conditions=_linux(category),
        ),
        ProcessingItem(
            identifier=f"custos_{category}_fields",
            transformation=FieldMappingTransformation(fields),
            rule_conditions=_linux(category),
        ),
        ProcessingItem(
            identifier=f"custos_{category}_logsource",
            transformation=ChangeLogsourceTransformation(
                category=category, product="linux", service="custos"
            ),
            rule_conditions=_linux(category),
        ),
    ]


def _initiated_items():
    """Sigma's Initiated 'true'/'false' as the connection's operation."""
    return [
        ProcessingItem(
            identifier=f"custos_initiated_{value}",
            transformation=ReplaceStringTransformation(regex=f"^{value}$", replacement=operation),
            rule_conditions=_linux("network_connection"),
            field_name_conditions=[IncludeFieldCondition(fields=["Initiated"])],
        )
        for value, operation in (
            ("true", "NETWORK_OPERATION_CONNECT"),
            ("false", "NETWORK_OPERATION_ACCEPT"),
        )
    ]


def custos_pipeline() -> ProcessingPipeline:
    """Sigma's Linux process_creation, file_event and network_connection on Custos events."""
    items = _initiated_items()
    for category, (fields, condition) in CATEGORIES.items():
        items += _category_items(category, fields, condition)
    supported = [condition for category in CATEGORIES for condition in _linux(category)]
    items += [
        ProcessingItem(
            identifier="custos_unsupported_field",
            transformation=DetectionItemFailureTransformation(
                "Custos has no field for this Sigma field"
            ),
            field_name_conditions=[ExcludeFieldCondition(fields=CUSTOS_FIELDS)],
        ),
        ProcessingItem(
            identifier="custos_unsupported_logsource",
            transformation=RuleFailureTransformation(
                "Custos supports the Linux process_creation, file_event and "
                "network_connection log sources"
            ),
            rule_conditions=supported,
            rule_condition_negation=True,
            rule_condition_linking=any,
        ),
    ]
    return ProcessingPipeline(
        name="Sigma Linux log sources to Custos events",
        priority=20,
        items=items,
    )
