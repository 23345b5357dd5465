"""Find tensors of a serialized ONNX model that keep their data in other files.

ONNX Runtime resolves such "external data" against the current directory when a model is loaded
from bytes, so a crafted model could read any file the user can. Boneage models never use it, so
any such tensor is refused. This reads the protobuf wire format directly: no ``onnx`` package and
no inference session are needed, and it visits every place a tensor can hide (initializers,
``Constant`` attributes, subgraphs of ``If``/``Loop``/``Scan``, functions, training graphs).
"""

from __future__ import annotations

from collections.abc import Iterator

from boneage.errors import InvalidModelError

# For each message, its fields that hold a message which can contain a TensorProto (onnx.proto3).
# tests/test_model_safety.py checks this table against the onnx package's own descriptors.
TENSOR_PATHS: dict[str, dict[int, str]] = {
    "ModelProto": {7: "GraphProto", 20: "TrainingInfoProto", 25: "FunctionProto"},
    "GraphProto": {1: "NodeProto", 5: "TensorProto", 15: "SparseTensorProto"},
    "NodeProto": {5: "AttributeProto"},
    "AttributeProto": {5: "TensorProto", 6: "GraphProto", 10: "TensorProto", 11: "GraphProto",
                       22: "SparseTensorProto", 23: "SparseTensorProto"},
    "FunctionProto": {7: "NodeProto", 11: "AttributeProto"},
    "TrainingInfoProto": {1: "GraphProto", 2: "GraphProto"},
    "SparseTensorProto": {1: "TensorProto", 2: "TensorProto"},
    "TensorProto": {},
}
EXTERNAL_DATA_FIELD = 13  # TensorProto.external_data
DATA_LOCATION_FIELD = 14  # TensorProto.data_location
EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
# protobuf's own default recursion limit: ONNX Runtime could not parse a model nested deeper.
MAX_DEPTH = 100
# Fields read before giving up: DenseNet121 has 21,293; a crafted file of empty messages would
# otherwise keep the scan busy for minutes per hundred MB.
MAX_FIELDS = 2_000_000


class WireError(InvalidModelError):
    """The bytes are not a well-formed protobuf message."""


def varint(data: bytes | memoryview, at: int, end: int) -> tuple[int, int]:
    """The protobuf varint at ``data[at]`` and where the next field starts."""
    value, shift = 0, 0
    while at < end and shift < 70:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    raise WireError("truncated or overlong varint")


def fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Each field of the message in ``data[start:end]``: (number, wire type, a, b), where (a, b)
    is the payload's span for length-delimited fields and (value, value) for varints."""
    at = start
    while at < end:
        key, at = varint(data, at, end)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, at = varint(data, at, end)
            yield number, wire, value, value
            continue
        if wire == LENGTH:
            length, at = varint(data, at, end)
            if at + length > end:
                raise WireError("a field runs past the end of its message")
            yield number, wire, at, at + length
            at += length
        elif wire in (FIXED64, FIXED32):
            at += 8 if wire == FIXED64 else 4
        else:  # groups (3, 4) are not in ONNX; 6 and 7 do not exist
            raise WireError(f"unexpected protobuf wire type {wire}")
    if at != end:
        raise WireError("a field runs past the end of its message")


def _is_external(fields_of_tensor: Iterator[tuple[int, int, int, int]]) -> bool:
    for number, wire, a, _ in fields_of_tensor:
        if number == EXTERNAL_DATA_FIELD and wire == LENGTH:
            return True
        if number == DATA_LOCATION_FIELD and wire == VARINT and a == EXTERNAL:
            return True
    return False


def external_tensors(data: bytes) -> int:
    """How many tensors in the serialized ``ModelProto`` point at external data (0 for a
    self-contained model). Raises :class:`WireError` if the bytes are not a protobuf message, or
    nest deeper than protobuf itself parses.

    Depth first over one field iterator per open message, so memory grows with the nesting depth
    (bounded), not with the number of fields: a model of a million empty nodes once held a
    million pending spans (130 MB for 2 MB of input)."""
    view = memoryview(data)
    read = 0

    def counted(start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        nonlocal read
        for field in fields(view, start, end):
            read += 1
            if read > MAX_FIELDS:
                raise WireError(f"more than {MAX_FIELDS:,} protobuf fields: not a model boneage reads")
            yield field

    found = 0
    stack = [("ModelProto", counted(0, len(data)))]
    while stack:
        kind, open_fields = stack[-1]
        children = TENSOR_PATHS[kind]
        for number, wire, a, b in open_fields:
            if wire != LENGTH or number not in children:
                continue
            if children[number] == "TensorProto":
                found += _is_external(counted(a, b))
                continue
            if len(stack) >= MAX_DEPTH:
                raise WireError(f"messages nested more than {MAX_DEPTH} deep")
            stack.append((children[number], counted(a, b)))
            break
        else:
            stack.pop()
    return found
