"""The Sparkplug B payload schema (``org.eclipse.tahu.protobuf``), built as a protobuf descriptor.

The field numbers and types are those of the specification's ``sparkplug_b.proto`` (Sparkplug
3.0, Annex). Building the descriptor here lets the `protobuf` library do all wire encoding
without a generated module in the source tree; ``tests/interop`` checks it against an
independently written ``.proto`` decoded by ``protoc``.
"""

from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE: Final = "org.eclipse.tahu.protobuf"

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_T = {
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}

# message name -> [(field name, number, type or message name, repeated?, oneof name or None)]
_FieldSpec = tuple[str, int, str, bool, str | None]
_MESSAGES: Final[dict[str, list[_FieldSpec]]] = {
    "Payload.MetaData": [
        ("is_multi_part", 1, "bool", False, None),
        ("content_type", 2, "string", False, None),
        ("size", 3, "uint64", False, None),
        ("seq", 4, "uint64", False, None),
        ("file_name", 5, "string", False, None),
        ("file_type", 6, "string", False, None),
        ("md5", 7, "string", False, None),
        ("description", 8, "string", False, None),
    ],
    "Payload.PropertyValue": [
        ("type", 1, "uint32", False, None),
        ("is_null", 2, "bool", False, None),
        ("int_value", 3, "uint32", False, "value"),
        ("long_value", 4, "uint64", False, "value"),
        ("float_value", 5, "float", False, "value"),
        ("double_value", 6, "double", False, "value"),
        ("boolean_value", 7, "bool", False, "value"),
        ("string_value", 8, "string", False, "value"),
        ("propertyset_value", 9, "Payload.PropertySet", False, "value"),
        ("propertysets_value", 10, "Payload.PropertySetList", False, "value"),
    ],
    "Payload.PropertySet": [
        ("keys", 1, "string", True, None),
        ("values", 2, "Payload.PropertyValue", True, None),
    ],
    "Payload.PropertySetList": [("propertyset", 1, "Payload.PropertySet", True, None)],
    "Payload.DataSet.DataSetValue": [
        ("int_value", 1, "uint32", False, "value"),
        ("long_value", 2, "uint64", False, "value"),
        ("float_value", 3, "float", False, "value"),
        ("double_value", 4, "double", False, "value"),
        ("boolean_value", 5, "bool", False, "value"),
        ("string_value", 6, "string", False, "value"),
    ],
    "Payload.DataSet.Row": [("elements", 1, "Payload.DataSet.DataSetValue", True, None)],
    "Payload.DataSet": [
        ("num_of_columns", 1, "uint64", False, None),
        ("columns", 2, "string", True, None),
        ("types", 3, "uint32", True, None),
        ("rows", 4, "Payload.DataSet.Row", True, None),
    ],
    "Payload.Metric": [
        ("name", 1, "string", False, None),
        ("alias", 2, "uint64", False, None),
        ("timestamp", 3, "uint64", False, None),
        ("datatype", 4, "uint32", False, None),
        ("is_historical", 5, "bool", False, None),
        ("is_transient", 6, "bool", False, None),
        ("is_null", 7, "bool", False, None),
        ("metadata", 8, "Payload.MetaData", False, None),
        ("properties", 9, "Payload.PropertySet", False, None),
        ("int_value", 10, "uint32", False, "value"),
        ("long_value", 11, "uint64", False, "value"),
        ("float_value", 12, "float", False, "value"),
        ("double_value", 13, "double", False, "value"),
        ("boolean_value", 14, "bool", False, "value"),
        ("string_value", 15, "string", False, "value"),
        ("bytes_value", 16, "bytes", False, "value"),
        ("dataset_value", 17, "Payload.DataSet", False, "value"),
    ],
    "Payload": [
        ("timestamp", 1, "uint64", False, None),
        ("metrics", 2, "Payload.Metric", True, None),
        ("seq", 3, "uint64", False, None),
        ("uuid", 4, "string", False, None),
        ("body", 5, "bytes", False, None),
    ],
}


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="sparkplug_b.proto", package=PACKAGE, syntax="proto2"
    )
    protos: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full_name in sorted(_MESSAGES, key=lambda n: n.count(".")):
        parent, _, short = full_name.rpartition(".")
        container = protos[parent].nested_type if parent else file.message_type
        proto = container.add(name=short)
        protos[full_name] = proto
        oneofs: list[str] = []
        for name, number, kind, repeated, oneof in _MESSAGES[full_name]:
            field = proto.field.add(
                name=name, number=number, label=_REPEATED if repeated else _OPTIONAL
            )
            if kind in _T:
                field.type = _T[kind]
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{kind}"
            if oneof is not None:
                if oneof not in oneofs:
                    oneofs.append(oneof)
                    proto.oneof_decl.add(name=oneof)
                field.oneof_index = oneofs.index(oneof)
    # The specification reserves 6..max of Payload and the metric value for extensions.
    protos["Payload"].extension_range.add(start=6, end=536870912)
    return file


def _message_classes() -> tuple[Any, Any]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_build_file())
    payload = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Payload"))
    metric = message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{PACKAGE}.Payload.Metric")
    )
    return payload, metric


PayloadMessage, MetricMessage = _message_classes()
