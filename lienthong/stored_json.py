"""Messages back from the JSON the services store them as, fast where it is safe.

Records are stored as ``json_format.MessageToDict(message, preserving_proto_field_name=True)``.
Reading one back with ``json_format.ParseDict`` is pure Python and costs most of a
reconciliation (about 150 us for a birth registration on this machine). ``parse_stored``
sets directly what MessageToDict writes (nested messages, enums by value name, strings,
booleans and 32-bit integers, by proto field name) and hands anything else to ParseDict, so
that it returns exactly the message ParseDict would, or raises its ParseError.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def parse_stored(data: Any, message: M) -> M:  # noqa: ANN401 - decoded JSON
    """``data`` parsed into ``message`` (empty) as ``json_format.ParseDict`` would.

    Raises ParseError where ParseDict raises anything.
    """
    try:
        _fill(message, data)
    except _Unsupported:
        message.Clear()
        try:
            json_format.ParseDict(data, message)
        except json_format.ParseError:
            raise
        except Exception as error:
            # Some malformed values escape ParseDict as other errors (an unpaired surrogate
            # as an enum name: SystemError); to a reader they are all unreadable data.
            raise json_format.ParseError(f"unreadable: {type(error).__name__}") from error
    return message


class _Unsupported(Exception):
    """The data holds something _fill leaves to json_format."""


# How _fill sets each field of a message type: a nested message, an enum (by value name),
# or a scalar of exactly this Python type. Repeated fields, oneof members, well-known types,
# bytes and the other scalars (which ParseDict converts from several JSON forms) are absent,
# so unsupported.
_Step = tuple[str, Any]
_NO_STEP: _Step = ("unsupported", None)
_PYTHON_TYPES = {
    FieldDescriptor.CPPTYPE_STRING: str,
    FieldDescriptor.CPPTYPE_BOOL: bool,
    FieldDescriptor.CPPTYPE_INT32: int,
}


@functools.cache
def _steps(descriptor: Descriptor) -> dict[str, _Step]:
    steps: dict[str, _Step] = {}
    for field in descriptor.fields:
        # ParseDict refuses two members of one oneof, which setting them in turn would not.
        if field.is_repeated or field.containing_oneof is not None:
            continue
        if field.message_type is not None:
            if field.message_type.file.package != "google.protobuf":
                steps[field.name] = ("message", None)
        elif field.enum_type is not None:
            numbers = {value.name: value.number for value in field.enum_type.values}
            steps[field.name] = ("enum", numbers)
        elif field.cpp_type in _PYTHON_TYPES and field.type != FieldDescriptor.TYPE_BYTES:
            steps[field.name] = ("scalar", _PYTHON_TYPES[field.cpp_type])
    return steps


def _fill(message: Message, data: Any) -> None:  # noqa: ANN401 - decoded JSON
    """Set what MessageToDict writes; _Unsupported for anything ParseDict would convert.

    Only proto field names, exact value types and enum value names are taken, so where this
    succeeds the message is the one ParseDict makes.
    """
    if type(data) is not dict:
        raise _Unsupported
    steps = _steps(message.DESCRIPTOR)
    for name, value in data.items():
        kind, detail = steps.get(name, _NO_STEP)
        if kind == "message" and type(value) is dict:
            child = getattr(message, name)
            child.SetInParent()
            _fill(child, value)
        elif kind == "enum" and type(value) is str and value in detail:
            setattr(message, name, detail[value])
        elif kind == "scalar" and type(value) is detail:
            try:
                setattr(message, name, value)
            except (ValueError, UnicodeError) as error:  # out of range; unpaired surrogate
                raise _Unsupported from error
        else:
            raise _Unsupported
