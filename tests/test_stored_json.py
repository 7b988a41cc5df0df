"""parse_stored returns what json_format.ParseDict returns, or raises what it raises."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from justice_adapter.pin_requests import registered_birth
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.pilot import pilot_registrations
from lienthong.population.v1 import citizen_pb2
from lienthong.reference import code_lists
from lienthong.stored_json import parse_stored

REGISTRATIONS = [
    request.birth_registration for request in pilot_registrations(code_lists(), 300, seed=4)
]


def _stored(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _read(data: Any, message_type: type) -> Any:
    """What parse_stored makes of ``data``: a message, or a ParseError and nothing else."""
    try:
        return parse_stored(data, message_type()).SerializeToString(deterministic=True)
    except json_format.ParseError:
        return "refused"


def _reference(data: Any, message_type: type) -> Any:
    try:
        return json_format.ParseDict(data, message_type()).SerializeToString(deterministic=True)
    except Exception:  # noqa: BLE001 - ParseDict refuses some data with other errors
        return "refused"


@pytest.mark.parametrize("index", range(0, len(REGISTRATIONS), 7))
def test_stored_registrations_and_births_read_back_as_parse_dict_reads_them(index: int) -> None:
    registration = REGISTRATIONS[index]
    birth = registered_birth(registration)
    assert parse_stored(_stored(registration), br.BirthRegistration()) == registration
    assert parse_stored(_stored(birth), citizen_pb2.RegisteredBirth()) == birth


# What a hand edit or a faulty migration may leave in place of a value.
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(["SEX_MALE", "SEX_FEMALE", "ADMINISTRATIVE_LEVEL_COMMUNE", "1", "\ud800"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["code", "year", "x"]), st.integers(), max_size=2),
)


def _paths(data: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found.extend(_paths(value, (*prefix, key)))
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0, max_value=len(REGISTRATIONS) - 1),
    choice=st.integers(min_value=0),
    value=ODD_VALUES,
    extra=st.booleans(),
)
def test_altered_data_is_read_or_refused_exactly_as_parse_dict_does(
    index: int,
    choice: int,
    value: Any,
    extra: bool,  # noqa: FBT001 - drawn by hypothesis
) -> None:
    for message, message_type in (
        (REGISTRATIONS[index], br.BirthRegistration),
        (registered_birth(REGISTRATIONS[index]), citizen_pb2.RegisteredBirth),
    ):
        data = copy.deepcopy(_stored(message))
        path = _paths(data)[choice % len(_paths(data))]
        holder = data
        for key in path[:-1]:
            holder = holder[key]
        if extra:
            holder[f"{path[-1]}_unknown"] = value
        else:
            holder[path[-1]] = value
        assert _read(data, message_type) == _reference(data, message_type)
