"""Fuzzing every RPC of every contract service with bad bytes, through the real stack.

Every method the contracts define (read from their descriptors, not listed by hand) is called
with raw bytes through generic multicallables, as a caller the policy grants that method, both
through the gateway and straight to the adapter behind it as the gateway's own identity. The
inputs are random bytes, valid requests mutated on the wire, invalid UTF-8 in string fields,
extreme values, and messages over the size limit. What a caller would notice is pinned:

- no call ends INTERNAL or UNKNOWN, ever;
- bytes that do not parse as the method's request end INVALID_ARGUMENT with a
  google.rpc.BadRequest naming the message type, never the payload;
- a call that does not end OK leaves the adapters' databases as they were (the row count of
  every table of justice.db and police.db); a mutated request that still parses and is valid
  may be answered OK, and may then write;
- after the run every server still answers a valid call.

LIENTHONG_FUZZ_EXAMPLES (default 15) is the number of hypothesis examples per method and kind
of input; each example is sent through the gateway and, when the method has an adapter behind
the gateway, straight to that adapter. LIENTHONG_FUZZ_REPORT names a JSON file that receives
how many inputs were tried, by kind, and how long the module took.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import sqlalchemy
from builders import HA_NOI_COMMUNE, issue_request
from google.protobuf import field_mask_pb2, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stack import OFFICERS, POPULATION_ID, Stack, create_officer, start_stack

from certs.pki import BOOTSTRAP_ADMINISTRATOR
from lienthong import metadata
from lienthong.calendar.v1 import date_pb2
from lienthong.civilregistry.v1 import birth_registration_pb2 as br
from lienthong.civilregistry.v1 import birth_registration_service_pb2 as brs
from lienthong.civilregistry.v1 import officer_pb2, officer_service_pb2
from lienthong.civilregistry.v1 import reconciliation_service_pb2 as rc
from lienthong.contracts import SERVICE_FILES, Method, methods
from lienthong.demo import SAMPLES, sample_request
from lienthong.gateway.v1 import audit_service_pb2 as audit
from lienthong.person.v1 import person_name_pb2, sex_pb2
from lienthong.place.v1 import administrative_unit_pb2 as au
from lienthong.population.v1 import citizen_pb2
from lienthong.population.v1 import citizen_service_pb2 as cs
from lienthong.reference import code_lists

EXAMPLES = int(os.environ.get("LIENTHONG_FUZZ_EXAMPLES", "15"))
REPORT = os.environ.get("LIENTHONG_FUZZ_REPORT")
TIMEOUT = 10.0  # seconds for one call; a valid one takes well under one
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # the gateway's default max_message_bytes, and grpc's
REGISTRY = "spiffe://lienthong.local/moj/civil-registry"
AMEND = "/lienthong.civilregistry.v1.BirthRegistrationService/AmendBirthRegistration"
CORRECT = "/lienthong.civilregistry.v1.BirthRegistrationService/CorrectBirthRegistration"
RECONCILE = "/lienthong.civilregistry.v1.ReconciliationService/Reconcile"
LIST_EXCHANGES = "/lienthong.gateway.v1.AuditService/ListExchanges"
UPDATE_CITIZEN = "/lienthong.population.v1.CitizenService/UpdateCitizen"
STREAM_ISSUE = "/lienthong.population.v1.CitizenService/StreamIssuePersonalIdentificationNumbers"
OFFICER_ID = f"officer-{HA_NOI_COMMUNE}"
VICTIM_ID = "fuzz-victim"  # the account DisableOfficer's valid request disables
NEVER = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})

METHODS = methods()
PATHS = sorted(METHODS)
REQUEST_CLASSES: dict[str, type[Message]] = {
    f"/{service.full_name}/{method.name}": message_factory.GetMessageClass(method.input_type)
    for file in SERVICE_FILES
    for service in file.services_by_name.values()
    for method in service.methods
}

# Inputs tried, by kind, and the answers by status code (apart: those of the "pinned" cases
# of test_values_out_of_a_types_range_are_invalid_argument);
# written to LIENTHONG_FUZZ_REPORT and shown when the module ends.
TRIED: Counter[str] = Counter()
ANSWERS: Counter[str] = Counter()
PINNED_ANSWERS: Counter[str] = Counter()

# Who calls each service through the gateway (a key of Fuzz.channels), the identity the
# gateway passes on for that caller when the adapter is called directly, and the purpose
# config/policy.toml grants the caller for the method.
CALLERS: dict[str, tuple[str, str]] = {
    "officer": ("officer", OFFICERS + OFFICER_ID),
    "administrator": ("administrator", OFFICERS + BOOTSTRAP_ADMINISTRATOR),
    "population": ("police", POPULATION_ID),
    "registry": ("justice", REGISTRY),
    "portal": ("officer-portal", ""),
}
CALLER_OF_SERVICE = {
    "lienthong.civilregistry.v1.BirthRegistrationService": ("officer", "birth-registration"),
    "lienthong.civilregistry.v1.OfficerService": ("administrator", "account-management"),
    "lienthong.civilregistry.v1.ReconciliationService": ("population", "reconciliation"),
    "lienthong.gateway.v1.AuditService": ("portal", "audit"),
}
CITIZEN_PURPOSES = {
    "IssuePersonalIdentificationNumber": "birth-registration",
    "StreamIssuePersonalIdentificationNumbers": "birth-registration",
    "GetCitizen": "civil-status-correction",
    "UpdateCitizen": "civil-status-correction",
    "VerifyCitizen": "identity-verification",
    "ListCitizenDigests": "reconciliation",
}


def _caller_and_purpose(method: Method) -> tuple[str, str]:
    if method.service == "lienthong.population.v1.CitizenService":
        return "registry", CITIZEN_PURPOSES[method.path.rsplit("/", 1)[1]]
    return CALLER_OF_SERVICE[method.service]


# ---------------------------------------------------------------------------------------------
# Calling with raw bytes


@dataclass(frozen=True)
class Outcome:
    """How one call ended: its code and its google.rpc.Status (None when OK or absent), and
    the messages answered before it ended."""

    code: grpc.StatusCode
    status: object | None
    details: str
    answers: tuple[bytes, ...] = ()

    def refused(self, path: str) -> bool:
        """Whether the call, or an item of a stream that answers per item, was refused."""
        if self.code != grpc.StatusCode.OK:
            return True
        if path != STREAM_ISSUE:
            return False
        items = [
            cs.StreamIssuePersonalIdentificationNumbersResponse.FromString(a) for a in self.answers
        ]
        return any(item.WhichOneof("result") == "failure" for item in items)


def _invoke(
    channel: grpc.Channel, method: Method, payload: bytes, sent: tuple[tuple[str, str], ...]
) -> Outcome:
    """Call ``method`` with ``payload`` as the request bytes (one message for a stream)."""
    options = {"timeout": TIMEOUT, "metadata": sent}
    answers: list[bytes] = []
    try:
        if method.client_streaming and method.server_streaming:
            call = channel.stream_stream(method.path, None, None)
            answers.extend(call(iter([payload]), **options))
        elif method.client_streaming:
            answers.append(
                channel.stream_unary(method.path, None, None)(iter([payload]), **options)
            )
        elif method.server_streaming:
            answers.extend(channel.unary_stream(method.path, None, None)(payload, **options))
        else:
            answers.append(channel.unary_unary(method.path, None, None)(payload, **options))
    except grpc.RpcError as error:
        status = rpc_status.from_call(error)
        return Outcome(error.code(), status, error.details() or "", tuple(answers))
    return Outcome(grpc.StatusCode.OK, None, "", tuple(answers))


def _parses(path: str, payload: bytes) -> bool:
    try:
        REQUEST_CLASSES[path].FromString(payload)
    except DecodeError:
        return False
    return True


def _bad_request(outcome: Outcome) -> error_details_pb2.BadRequest | None:
    status = outcome.status
    for detail in getattr(status, "details", ()):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            found = error_details_pb2.BadRequest()
            detail.Unpack(found)
            return found
    return None


# ---------------------------------------------------------------------------------------------
# The stack under fuzzing


@dataclass
class Fuzz:
    """The running stack, a channel per caller, the adapters' databases and a valid request
    per method."""

    stack: Stack
    channels: dict[str, grpc.Channel]
    direct: dict[str, grpc.Channel]  # "justice" / "police": as the gateway, to the adapter
    databases: dict[str, sqlalchemy.Engine]
    valid: dict[str, bytes] = field(default_factory=dict)

    def row_counts(self) -> dict[str, int]:
        """The row count of every table of both adapters' databases."""
        counts: dict[str, int] = {}
        for name, engine in self.databases.items():
            tables = sqlalchemy.inspect(engine).get_table_names()
            query = sqlalchemy.select(
                *(
                    sqlalchemy.select(sqlalchemy.func.count())
                    .select_from(sqlalchemy.table(t))
                    .scalar_subquery()
                    for t in tables
                )
            )
            with engine.connect() as connection:
                row = connection.execute(query).one()
            counts.update({f"{name}.{t}": n for t, n in zip(tables, row, strict=True)})
        return counts

    def routes(self, path: str) -> list[tuple[str, grpc.Channel, tuple[tuple[str, str], ...]]]:
        """Where ``path`` is called: through the gateway, and straight to its adapter."""
        method = METHODS[path]
        caller, purpose = _caller_and_purpose(method)
        system, identity = CALLERS[caller]
        sent = ((metadata.PURPOSE, purpose), (metadata.REQUEST_ID, str(uuid.uuid4())))
        found = [("gateway", self.channels[system], sent)]
        if method.service == "lienthong.population.v1.CitizenService":
            found.append(("police", self.direct["police"], (*sent, (metadata.CALLER, identity))))
        elif method.service != "lienthong.gateway.v1.AuditService":
            found.append(("justice", self.direct["justice"], (*sent, (metadata.CALLER, identity))))
        return found

    def send(self, path: str, payload: bytes, kind: str) -> list[tuple[str, Outcome]]:
        """Send ``payload`` to ``path`` by every route and check what a caller would notice."""
        parses = _parses(path, payload)
        outcomes = []
        for route, channel, sent in self.routes(path):
            before = self.row_counts()
            outcome = _invoke(channel, METHODS[path], payload, sent)
            TRIED[kind] += 1
            (PINNED_ANSWERS if kind == "pinned" else ANSWERS)[outcome.code.name] += 1
            where = f"{path} via {route} ({len(payload)} bytes)"
            assert outcome.code not in NEVER, f"{where}: {outcome.code.name} {outcome.details!r}"
            if len(payload) <= MAX_MESSAGE_BYTES:  # e.g. an answer too large to be received
                assert outcome.code != grpc.StatusCode.RESOURCE_EXHAUSTED, (
                    f"{where}: RESOURCE_EXHAUSTED {outcome.details!r}"
                )
            if not parses and len(payload) <= MAX_MESSAGE_BYTES:
                assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (
                    f"{where}: bytes that do not parse got {outcome.code.name}"
                )
                _assert_names_the_message(outcome, path, where)
            if outcome.refused(path):
                assert self.row_counts() == before, f"{where}: {outcome.code.name} but wrote"
            outcomes.append((route, outcome))
        return outcomes


def _assert_names_the_message(outcome: Outcome, path: str, where: str) -> None:
    bad_request = _bad_request(outcome)
    assert bad_request is not None, f"{where}: INVALID_ARGUMENT without a BadRequest"
    (violation,) = bad_request.field_violations
    name = REQUEST_CLASSES[path].DESCRIPTOR.full_name
    assert violation.description.startswith(f"not a valid {name}"), violation.description
    assert len(violation.description) < len(name) + 64  # short, and no payload in it


def _today() -> date_pb2.Date:
    today = dt.datetime.now(dt.UTC).date()
    return date_pb2.Date(year=today.year, month=today.month, day=today.day)


def _valid_requests(registration: br.BirthRegistration) -> dict[str, Message]:
    """A valid request per method, about the registration (and its PIN) the fixture made."""
    pin = registration.personal_identification_number
    changed = br.BirthRegistration()
    changed.CopyFrom(registration)
    changed.child.name.given_name = "BÌNH"
    issue = issue_request(
        f"birthRegistrations/{HA_NOI_COMMUNE}-2016-77", request_id=str(uuid.uuid4())
    )
    stream_item = cs.StreamIssuePersonalIdentificationNumbersRequest(
        request_id=str(uuid.uuid4()), registered_birth=issue.registered_birth
    )
    stream_item.registered_birth.birth_registration = f"birthRegistrations/{HA_NOI_COMMUNE}-2016-78"
    name = person_name_pb2.PersonName(family_name="LÊ", given_name="HÀ")
    return {
        "RegisterBirth": sample_request(SAMPLES[0], code_lists()),
        "GetBirthRegistration": brs.GetBirthRegistrationRequest(name=registration.name),
        "ListBirthRegistrations": brs.ListBirthRegistrationsRequest(
            page_size=10, unit_code=HA_NOI_COMMUNE
        ),
        "AmendBirthRegistration": brs.AmendBirthRegistrationRequest(
            request_id=str(uuid.uuid4()),
            birth_registration=changed,
            update_mask=field_mask_pb2.FieldMask(paths=["child.name"]),
            reason="typing error at entry",
        ),
        "CorrectBirthRegistration": brs.CorrectBirthRegistrationRequest(
            request_id=str(uuid.uuid4()),
            birth_registration=changed,
            update_mask=field_mask_pb2.FieldMask(paths=["child.name"]),
            decision=brs.CorrectionDecision(number="12/QĐ-UBND", date=_today()),
        ),
        "GetRegistrationStatistics": brs.GetRegistrationStatisticsRequest(
            unit_codes=[HA_NOI_COMMUNE], registered_from=_today(), registered_to=_today()
        ),
        "CreateOfficer": officer_service_pb2.CreateOfficerRequest(
            request_id=str(uuid.uuid4()),
            officer_id="fuzz-new",
            officer=officer_pb2.Officer(
                display_name=name,
                unit=au.AdministrativeUnit(
                    level=au.ADMINISTRATIVE_LEVEL_COMMUNE, code=HA_NOI_COMMUNE
                ),
                role=officer_pb2.OFFICER_ROLE_COMMUNE_OFFICER,
            ),
        ),
        "GetOfficer": officer_service_pb2.GetOfficerRequest(name=f"officers/{OFFICER_ID}"),
        "ListOfficers": officer_service_pb2.ListOfficersRequest(page_size=10),
        "DisableOfficer": officer_service_pb2.DisableOfficerRequest(name=f"officers/{VICTIM_ID}"),
        "Reconcile": rc.ReconcileRequest(
            request_id=str(uuid.uuid4()), unit_code="01", start_date=_today(), end_date=_today()
        ),
        "IssuePersonalIdentificationNumber": issue,
        "StreamIssuePersonalIdentificationNumbers": stream_item,
        "GetCitizen": cs.GetCitizenRequest(name=f"citizens/{pin}"),
        "VerifyCitizen": cs.VerifyCitizenRequest(
            personal_identification_number=pin,
            claim=cs.CitizenClaim(sex=sex_pb2.SEX_FEMALE),
        ),
        "UpdateCitizen": cs.UpdateCitizenRequest(
            request_id=str(uuid.uuid4()),
            citizen=citizen_pb2.Citizen(name=f"citizens/{pin}", sex=sex_pb2.SEX_MALE),
            update_mask=field_mask_pb2.FieldMask(paths=["sex"]),
            reason="Quyết định cải chính 3/QĐ",
        ),
        "ListCitizenDigests": cs.ListCitizenDigestsRequest(province_code="01", salt=b"s" * 32),
        "GetLatestCheckpoint": audit.GetLatestCheckpointRequest(),
        "GetInclusionProof": audit.GetInclusionProofRequest(leaf_index=0, tree_size=1),
        "GetConsistencyProof": audit.GetConsistencyProofRequest(
            first_tree_size=1, second_tree_size=2
        ),
        "ListExchanges": audit.ListExchangesRequest(page_size=10),
    }


@pytest.fixture(scope="module")
def fuzz(pki, tmp_path_factory, pytestconfig) -> Iterator[Fuzz]:
    started = time.monotonic()
    directory: Path = tmp_path_factory.mktemp("fuzz")
    stack = start_stack(pki, directory)
    channels = {
        "officer": stack.as_officer(HA_NOI_COMMUNE, OFFICER_ID),
        "administrator": stack.administrator(),
        **{system: stack.channel(system) for system in ("police", "justice", "officer-portal")},
    }
    direct = {
        "justice": stack.channel("gateway-client", stack.justice_address),
        "police": stack.channel("gateway-client", stack.police_address),
    }
    databases = {
        name: sqlalchemy.create_engine(f"sqlite:///{directory / name}.db")
        for name in ("justice", "police")
    }
    running = Fuzz(stack, channels, direct, databases)
    try:
        create_officer(channels["administrator"], VICTIM_ID, HA_NOI_COMMUNE)
        registered = brs.RegisterBirthResponse.FromString(
            channels["officer"].unary_unary(
                "/lienthong.civilregistry.v1.BirthRegistrationService/RegisterBirth", None, None
            )(
                sample_request(SAMPLES[0], code_lists()).SerializeToString(),
                timeout=TIMEOUT,
                metadata=((metadata.PURPOSE, "birth-registration"),),
            )
        ).birth_registration
        assert registered.personal_identification_number
        by_name = _valid_requests(registered)
        running.valid = {
            path: by_name[path.rsplit("/", 1)[1]].SerializeToString() for path in PATHS
        }
        yield running
    finally:
        for channel in (*channels.values(), *direct.values()):
            channel.close()
        stack.stop_all()
        for engine in databases.values():
            engine.dispose()
        elapsed = time.monotonic() - started
        summary = {
            "inputs_tried": sum(TRIED.values()),
            "by_kind": dict(TRIED),
            "answers": dict(ANSWERS.most_common()),
            "pinned_answers": dict(PINNED_ANSWERS.most_common()),
            "seconds": round(elapsed, 1),
        }
        if REPORT:
            Path(REPORT).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
        capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"\nfuzz: {json.dumps(summary)}")


# ---------------------------------------------------------------------------------------------
# Inputs

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire_type: int, body: bytes) -> bytes:
    """One encoded field: its key, then ``body`` (with its length first for wire type 2)."""
    key = _varint(number << 3 | wire_type)
    return key + (_varint(len(body)) + body if wire_type == 2 else body)


Leaf = tuple[FieldDescriptor, ...]


def _leaves(descriptor: Descriptor, prefix: Leaf = (), depth: int = 0) -> list[Leaf]:
    """Paths to every scalar field, and to every repeated field, of a request type."""
    found: list[Leaf] = []
    for each in descriptor.fields:
        path = (*prefix, each)
        if each.message_type is None or each.is_repeated:
            found.append(path)
        if each.message_type is not None and depth < 6:
            found.extend(_leaves(each.message_type, path, depth + 1))
    return found


# The fields of each request type by dotted path ("birth_registration.child.name.given_name").
LEAVES: dict[str, dict[str, Leaf]] = {
    path: {
        ".".join(f.name for f in leaf): leaf for leaf in _leaves(REQUEST_CLASSES[path].DESCRIPTOR)
    }
    for path in PATHS
}
STRING_LEAVES = {
    path: {
        name: leaf
        for name, leaf in leaves.items()
        if leaf[-1].type == FieldDescriptor.TYPE_STRING and len(leaf) <= 5
    }
    for path, leaves in LEAVES.items()
}
# Fields where an extreme value meets a known bug, pinned by a strict xfail test below; the
# extreme-value fuzzing leaves them out until the bug is fixed. None is open.
KNOWN_GAPS: dict[str, tuple[str, ...]] = {}
EXTREME_LEAVES = {
    path: {n: leaf for n, leaf in leaves.items() if not n.startswith(KNOWN_GAPS.get(path, ()))}
    for path, leaves in LEAVES.items()
}
# The field-by-field sweep leaves out the parts of an amendment's or correction's registration
# outside its update_mask ("child.name"), which the registry ignores; the random draws of
# test_extreme_values_end_in_a_clear_answer still reach them.
_IGNORED = ("birth_registration.",)
_MASKED = ("birth_registration.name", "birth_registration.child.name.")
SWEEP_LEAVES = {
    path: {
        n: leaf
        for n, leaf in leaves.items()
        if path not in {AMEND, CORRECT} or not n.startswith(_IGNORED) or n.startswith(_MASKED)
    }
    for path, leaves in EXTREME_LEAVES.items()
}

# (b) mutations of a valid request's bytes; positions are taken modulo the length.
_position = st.integers(0, 1 << 16)
_mutation = st.one_of(
    st.tuples(st.just("flip"), _position, st.integers(0, 7)),
    st.tuples(st.just("truncate"), _position),
    st.tuples(st.just("insert"), _position, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("duplicate"), _position, st.integers(1, 64)),
    st.tuples(
        st.just("unknown"),
        st.integers(1, (1 << 29) - 1),
        st.sampled_from([0, 1, 2, 5]),
        st.binary(max_size=32),
    ),
)


def _mutate(valid: bytes, mutations: list[tuple]) -> bytes:
    data = bytearray(valid)
    for mutation in mutations:
        kind, *args = mutation
        at = args[0] % (len(data) + 1) if kind != "unknown" else 0
        if kind == "flip" and data:
            data[at % len(data)] ^= 1 << args[1]
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = args[1]
        elif kind == "duplicate":
            data[at:at] = data[at : at + args[1]]
        elif kind == "unknown":
            number, wire_type, body = args
            data += _field(number, wire_type, _body(wire_type, body))
    return bytes(data)


def _body(wire_type: int, raw: bytes) -> bytes:
    """A well-formed value of ``wire_type`` made from ``raw``."""
    if wire_type == 0:
        return _varint(int.from_bytes(raw[:8], "little"))
    if wire_type == 1:
        return raw[:8].ljust(8, b"\0")
    if wire_type == 5:
        return raw[:4].ljust(4, b"\0")
    return raw


# (c) bytes that are not UTF-8
_not_utf8 = st.one_of(
    # a lone byte, a BOM of UTF-16, an overlong NUL, a surrogate, past U+10FFFF, a stray
    # continuation byte, a truncated sequence
    st.sampled_from(
        (
            b"\xff",
            b"\xfe\xff",
            b"\xc0\x80",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"ab\x80c",
            b"\xe2\x82",
        )
    ),
    st.binary(min_size=1, max_size=32).filter(lambda raw: not _is_utf8(raw)),
)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _with_string(valid: bytes, leaf: tuple[FieldDescriptor, ...], raw: bytes) -> bytes:
    """``valid`` with ``raw`` in the string field at ``leaf``, encoded by hand and appended
    (a singular message field that appears again is merged into the first)."""
    body = _field(leaf[-1].number, 2, raw)
    for parent in reversed(leaf[:-1]):
        body = _field(parent.number, 2, body)
    return valid + body


# (d) extreme values
_EXTREMES: dict[int, list[object]] = {
    FieldDescriptor.CPPTYPE_INT32: [-(2**31), 2**31 - 1, -1],
    FieldDescriptor.CPPTYPE_INT64: [-(2**63), 2**63 - 1, -1],
    FieldDescriptor.CPPTYPE_UINT32: [0, 2**32 - 1],
    FieldDescriptor.CPPTYPE_UINT64: [0, 2**64 - 1],
    FieldDescriptor.CPPTYPE_ENUM: [-(2**31), 2**31 - 1, -1, 1000],
    FieldDescriptor.CPPTYPE_DOUBLE: [math.inf, -math.inf, math.nan, 1e308, -0.0],
    FieldDescriptor.CPPTYPE_FLOAT: [math.inf, -math.inf, math.nan, -0.0],
    FieldDescriptor.CPPTYPE_BOOL: [True, False],
}
_LONG = 100_000
_STRINGS = [
    "x" * _LONG,
    "Ạ" * _LONG,
    "\x00",
    "\u202e\u200b",
    " ",
    "\U0001d518" * 1000,
    "9" * 40,
    "%s%n{0}",
]
_BYTES = [b"\xff" * _LONG, b"", b"\x00" * 64]
_MANY = 10_000


def _extreme_values(leaf: tuple[FieldDescriptor, ...]) -> st.SearchStrategy[object]:
    last = leaf[-1]
    if last.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        if last.type == FieldDescriptor.TYPE_BYTES:
            return st.one_of(st.sampled_from(_BYTES), st.binary(max_size=64))
        return st.one_of(st.sampled_from(_STRINGS), st.text(max_size=64))
    if last.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        return st.just(None)  # a repeated message field: many empty elements
    ranges = {
        FieldDescriptor.CPPTYPE_INT32: st.integers(-(2**31), 2**31 - 1),
        FieldDescriptor.CPPTYPE_INT64: st.integers(-(2**63), 2**63 - 1),
        FieldDescriptor.CPPTYPE_UINT32: st.integers(0, 2**32 - 1),
        FieldDescriptor.CPPTYPE_UINT64: st.integers(0, 2**64 - 1),
        FieldDescriptor.CPPTYPE_ENUM: st.integers(-(2**31), 2**31 - 1),
    }
    extremes = st.sampled_from(_EXTREMES[last.cpp_type])
    return st.one_of(extremes, ranges[last.cpp_type]) if last.cpp_type in ranges else extremes


def _with_value(
    valid: bytes, path: str, leaf: tuple[FieldDescriptor, ...], value: object, *, many: bool
) -> bytes:
    """``valid`` with ``value`` at ``leaf`` (``_MANY`` times in a repeated field, if short)."""
    request = REQUEST_CLASSES[path].FromString(valid)
    target: Message = request
    for parent in leaf[:-1]:
        child = getattr(target, parent.name)
        if parent.is_repeated:
            child = child[0] if len(child) else child.add()
        target = child
    if leaf[0].name != "request_id" and "request_id" in type(request).DESCRIPTOR.fields_by_name:
        # a new request each time, so that it is validated rather than found a repeat
        request.request_id = str(uuid.uuid4())
    last = leaf[-1]
    if last.is_repeated:
        container = getattr(target, last.name)
        # many short elements, or one long one: 10,000 long strings would be a gigabyte
        short = value is None or not isinstance(value, str | bytes) or len(value) < 100
        for _ in range(_MANY if (many or value is None) and short else 1):
            if value is None:
                container.add()
            else:
                container.append(value)
    else:
        setattr(target, last.name, value)
    return request.SerializeToString()


# ---------------------------------------------------------------------------------------------
# Tests

NAMED = [pytest.param(path, id=path.removeprefix("/lienthong.")) for path in PATHS]
WITH_FIELDS = [param for param in NAMED if EXTREME_LEAVES[param.values[0]]]
WITH_STRINGS = [param for param in NAMED if STRING_LEAVES[param.values[0]]]


def test_every_method_of_the_contracts_is_fuzzed() -> None:
    """The fuzzing covers the 21 RPCs of the five contract services, streaming ones too."""
    assert len(PATHS) == 21
    assert {METHODS[p].service.rsplit(".", 1)[1] for p in PATHS} == {
        "BirthRegistrationService", "OfficerService", "ReconciliationService",
        "CitizenService", "AuditService",
    }  # fmt: skip
    assert {(m.client_streaming, m.server_streaming) for m in METHODS.values()} == {
        (False, False), (False, True), (True, True),
    }  # fmt: skip


@pytest.mark.parametrize("path", NAMED)
def test_each_valid_request_reaches_the_adapter_by_every_route(fuzz: Fuzz, path: str) -> None:
    """The valid request the mutations start from is admitted by the gateway and answered by
    the service behind it, by every route, without INTERNAL or UNKNOWN (a write it makes is
    then expected: it is valid)."""
    outcomes = fuzz.send(path, fuzz.valid[path], "valid")
    for route, outcome in outcomes:
        assert outcome.code != grpc.StatusCode.PERMISSION_DENIED, (route, outcome.details)
        assert outcome.code != grpc.StatusCode.UNIMPLEMENTED, (route, outcome.details)


@pytest.mark.parametrize("path", NAMED)
@FUZZ
@given(payload=st.binary(max_size=512))
def test_random_bytes_end_in_a_clear_answer_and_write_nothing(
    fuzz: Fuzz, path: str, payload: bytes
) -> None:
    """Random bytes: never INTERNAL/UNKNOWN; INVALID_ARGUMENT with BadRequest when they do
    not parse; no row written unless answered OK."""
    fuzz.send(path, payload, "random")


@pytest.mark.parametrize("path", NAMED)
@FUZZ
@given(mutations=st.lists(_mutation, min_size=1, max_size=3))
def test_mutated_valid_requests_end_in_a_clear_answer(
    fuzz: Fuzz, path: str, mutations: list[tuple]
) -> None:
    """A valid request with bits flipped, truncated, bytes inserted or duplicated, or an
    unknown field appended: never INTERNAL/UNKNOWN; INVALID_ARGUMENT with BadRequest when
    it no longer parses; writes only when it is still valid and answered OK."""
    fuzz.send(path, _mutate(fuzz.valid[path], mutations), "mutated")


@pytest.mark.parametrize("path", WITH_STRINGS)
@FUZZ
@given(data=st.data(), raw=_not_utf8)
def test_invalid_utf8_in_a_string_field_is_invalid_argument(
    fuzz: Fuzz, path: str, data: st.DataObject, raw: bytes
) -> None:
    """Bytes that are not UTF-8 in any string field of a valid request (proto3 strings must
    be UTF-8): INVALID_ARGUMENT with a BadRequest naming the request type, nothing written."""
    name = data.draw(st.sampled_from(sorted(STRING_LEAVES[path])), label="field")
    leaf = STRING_LEAVES[path][name]
    payload = _with_string(fuzz.valid[path], leaf, raw)
    assert not _parses(path, payload)
    for route, outcome in fuzz.send(path, payload, "invalid-utf8"):
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, route


@pytest.mark.parametrize("path", WITH_FIELDS)
@FUZZ
@given(data=st.data())
def test_extreme_values_end_in_a_clear_answer(fuzz: Fuzz, path: str, data: st.DataObject) -> None:
    """Integer extremes, out-of-range enums, 100 kB strings and 10,000 repeated elements in
    any field of a valid request: never INTERNAL/UNKNOWN, no write unless answered OK."""
    name = data.draw(st.sampled_from(sorted(EXTREME_LEAVES[path])), label="field")
    leaf = EXTREME_LEAVES[path][name]
    value = data.draw(_extreme_values(leaf), label="value")
    many = data.draw(st.booleans(), label="many")
    payload = _with_value(fuzz.valid[path], path, leaf, value, many=many)
    fuzz.send(path, payload, "extreme")


def _sweep_values(leaf: Leaf) -> list[tuple[object, bool]]:
    """The values (and whether many of them) every field gets once: a numeric field its
    smallest and largest, a string or bytes field 100 kB, a repeated field 10,000 elements."""
    last = leaf[-1]
    if last.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        return [(None, True)]
    if last.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        long = _BYTES[0] if last.type == FieldDescriptor.TYPE_BYTES else _STRINGS[1]
        short = b"\x01" if last.type == FieldDescriptor.TYPE_BYTES else "01"
        return [(long, False), (short, True)] if last.is_repeated else [(long, False)]
    extremes = _EXTREMES[last.cpp_type]
    values = [(min(extremes), False), (max(extremes), False)] if len(extremes) > 1 else []
    if last.cpp_type in {FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT}:
        values = [(value, False) for value in extremes]
    if last.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        values = [(True, False)]
    return values + ([(values[-1][0], True)] if last.is_repeated else [])


@pytest.mark.parametrize("path", WITH_FIELDS)
def test_every_field_at_its_extremes_ends_in_a_clear_answer(fuzz: Fuzz, path: str) -> None:
    """Every field of the valid request in turn (SWEEP_LEAVES: the KNOWN_GAPS aside) set to
    the extremes of its type: never INTERNAL/UNKNOWN or RESOURCE_EXHAUSTED, no write unless
    answered OK."""
    for leaf in SWEEP_LEAVES[path].values():
        for value, many in _sweep_values(leaf):
            fuzz.send(path, _with_value(fuzz.valid[path], path, leaf, value, many=many), "sweep")


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        pytest.param(LIST_EXCHANGES, "start_time_from.seconds", 2**63 - 1, id="ListExchanges-time"),
        pytest.param(LIST_EXCHANGES, "start_time_to.nanos", -1, id="ListExchanges-nanos"),
        pytest.param(RECONCILE, "pending_threshold.seconds", 2**63 - 1, id="Reconcile-threshold"),
        pytest.param(AMEND, "update_mask.paths", "x" * 20_000, id="Amend-path"),
        pytest.param(CORRECT, "update_mask.paths", "x" * 20_000, id="Correct-path"),
        pytest.param(UPDATE_CITIZEN, "update_mask.paths", "x" * 20_000, id="UpdateCitizen-path"),
    ],
)  # fmt: skip
def test_values_out_of_a_types_range_are_invalid_argument(
    fuzz: Fuzz, path: str, name: str, value: object
) -> None:
    """The extreme values the fuzzing found answered INTERNAL, UNKNOWN or RESOURCE_EXHAUSTED:
    each must end INVALID_ARGUMENT with a short BadRequest, by every route."""
    payload = _with_value(fuzz.valid[path], path, LEAVES[path][name], value, many=False)
    for route, outcome in fuzz.send(path, payload, "pinned"):
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, route
        bad_request = _bad_request(outcome)
        assert bad_request is not None, route
        # Bounded, whatever was sent (a description may list the fields that are allowed).
        assert all(len(v.description) < 500 for v in bad_request.field_violations), route


def test_thousands_of_unknown_update_paths_get_one_short_violation(fuzz: Fuzz) -> None:
    """UpdateCitizen with 5,000 distinct paths that name no updatable field: INVALID_ARGUMENT
    with one violation for update_mask.paths that counts them, not one violation each (which
    would exceed gRPC's trailer limit and reach the caller as RESOURCE_EXHAUSTED)."""
    request = cs.UpdateCitizenRequest.FromString(fuzz.valid[UPDATE_CITIZEN])
    request.request_id = str(uuid.uuid4())
    request.update_mask.paths.extend(f"no_such_field_{n}" for n in range(5000))
    for route, outcome in fuzz.send(UPDATE_CITIZEN, request.SerializeToString(), "pinned"):
        assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, route
        bad_request = _bad_request(outcome)
        assert bad_request is not None, route
        (violation,) = [v for v in bad_request.field_violations if v.field == "update_mask.paths"]
        assert violation.description == (
            "'no_such_field_0' and 4999 more are not fields that can be updated"
        )


@pytest.mark.parametrize("path", NAMED)
def test_a_message_over_the_size_limit_is_resource_exhausted(fuzz: Fuzz, path: str) -> None:
    """A request over max_message_bytes (4 MiB) is refused RESOURCE_EXHAUSTED by the gateway
    and by the adapters alike, before any code runs, and nothing is written."""
    payload = fuzz.valid[path] + _field(19_999, 2, b"\0" * (MAX_MESSAGE_BYTES + 1))
    for route, outcome in fuzz.send(path, payload, "oversized"):
        assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, (route, outcome.details)


def test_a_bad_message_ends_a_stream_after_the_answers_to_the_good_ones(fuzz: Fuzz) -> None:
    """In StreamIssuePersonalIdentificationNumbers, items are parsed one at a time: a valid
    item is answered, and a following item that does not parse ends the stream
    INVALID_ARGUMENT with BadRequest (not INTERNAL)."""
    path = STREAM_ISSUE
    for number, (route, channel, sent) in enumerate(fuzz.routes(path), start=90):
        item = cs.StreamIssuePersonalIdentificationNumbersRequest.FromString(fuzz.valid[path])
        item.request_id = str(uuid.uuid4())
        item.registered_birth.birth_registration = (
            f"birthRegistrations/{HA_NOI_COMMUNE}-2016-{number}"
        )
        answers: list[bytes] = []
        call = channel.stream_stream(path, None, None)(
            iter([item.SerializeToString(), b"\xff\xff\xff"]), timeout=TIMEOUT, metadata=sent
        )
        with pytest.raises(grpc.RpcError) as raised:
            answers.extend(call)
        TRIED["stream"] += 1
        ANSWERS[raised.value.code().name] += 1
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, route
        assert len(answers) == 1, route
        answer = cs.StreamIssuePersonalIdentificationNumbersResponse.FromString(answers[0])
        assert answer.WhichOneof("result") == "issued", route
        outcome = Outcome(raised.value.code(), rpc_status.from_call(raised.value), "")
        _assert_names_the_message(outcome, path, route)


def test_the_servers_still_answer_valid_calls_after_the_fuzzing(fuzz: Fuzz) -> None:
    """After everything above, a fresh registration still gets its PIN through the whole
    path, and each adapter and the gateway's own service still answer a valid call."""
    path = "/lienthong.civilregistry.v1.BirthRegistrationService/RegisterBirth"
    fresh = sample_request(SAMPLES[0], code_lists()).SerializeToString()
    for route, outcome in fuzz.send(path, fresh, "valid"):
        assert outcome.code == grpc.StatusCode.OK, (route, outcome.details)
        (answer,) = outcome.answers
        registered = brs.RegisterBirthResponse.FromString(answer).birth_registration
        assert registered.pin_status == br.PIN_STATUS_ISSUED, route
    for name in (
        "/lienthong.civilregistry.v1.OfficerService/ListOfficers",
        "/lienthong.population.v1.CitizenService/GetCitizen",
        "/lienthong.gateway.v1.AuditService/GetLatestCheckpoint",
    ):
        for route, outcome in fuzz.send(name, fuzz.valid[name], "valid"):
            assert outcome.code == grpc.StatusCode.OK, (name, route, outcome.details)
