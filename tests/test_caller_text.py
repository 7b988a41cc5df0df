"""Text the caller chooses (request id, method path, purpose, on-behalf-of) of any length never
fails an audit write, its own or a neighbour's in the same group commit, on either database."""

from __future__ import annotations

import concurrent.futures
import hashlib

import grpc
import pytest
from echo_upstream import SERVICE, UNARY
from gateway_fixtures import PURPOSE, Setup

from gateway.audit.entry import TEXT_LIMITS, AuditEntry
from lienthong import metadata
from lienthong.signed_note import NoteVerifier, parse_receipt

LONG_METHOD = f"/{SERVICE}/" + "M" * (2_000 - len(SERVICE) - 2)
# (method, metadata, the text that is too long and the entry field it lands in)
LONG_CALLS = [
    (UNARY, ((metadata.REQUEST_ID, "r" * 300), *PURPOSE), "request_id"),
    (UNARY, ((metadata.REQUEST_ID, "q" * 5_000), *PURPOSE), "request_id"),
    (LONG_METHOD, PURPOSE, "method"),
    (UNARY, ((metadata.PURPOSE, "p" * 1_000),), "purpose"),
    (UNARY, ((metadata.ON_BEHALF_OF, "o" * 3_000), *PURPOSE), "on_behalf_of"),
]
SENT = {
    "request_id": {"r" * 300, "q" * 5_000},
    "method": {LONG_METHOD},
    "purpose": {"p" * 1_000},
    "on_behalf_of": {"o" * 3_000},
}


def _receipt_of(trailers, setup: Setup):
    (note,) = [value for key, value in trailers if key == metadata.RECEIPT]
    verifier = NoteVerifier(
        (setup.pki.directory / "audit-log.vkey").read_text(encoding="utf-8").strip()
    )
    return parse_receipt(verifier.open(note.decode()))


def _call(setup: Setup, system: str, method: str, sent) -> tuple[grpc.StatusCode, object]:
    with setup.channel(system) as channel:
        try:
            _, call = channel.unary_unary(method).with_call(b"x", timeout=30, metadata=sent)
        except grpc.RpcError as error:
            return error.code(), error.trailing_metadata()
        return grpc.StatusCode.OK, call.trailing_metadata()


@pytest.mark.parametrize("system", ["officer-portal", "police"])  # granted, and not granted
def test_long_caller_text_is_bounded_and_every_exchange_is_recorded(
    database_url: str, make_setup, system: str
) -> None:
    # database_url first: the database outlives the gateway that writes to it.
    setup = make_setup(audit_url=database_url)
    # The long calls interleave with ordinary ones, so they share group commits.
    calls = [(system, *call[:2]) for call in LONG_CALLS] * 4
    ordinary = [("officer-portal", UNARY, PURPOSE)] * 20
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        long_results = [pool.submit(_call, setup, *call) for call in calls]
        ordinary_results = [pool.submit(_call, setup, *call) for call in ordinary]
        answered = [future.result() for future in long_results]
        assert [future.result()[0] for future in ordinary_results] == [grpc.StatusCode.OK] * 20

    for code, trailers in answered:
        assert code in {grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED}
        receipt = _receipt_of(trailers, setup)  # the completion was made durable
        ((_, data),) = setup.gateway.audit.entries(receipt.leaf_index, receipt.leaf_index + 1)
        entry = AuditEntry.decode(data)
        assert entry.exchange_id == receipt.exchange_id
        assert entry.status == code.name
    for _, trailers in (future.result() for future in ordinary_results):
        _receipt_of(trailers, setup)
    assert setup.gateway.audit.tree_size() >= len(calls) + 2 * len(ordinary)


@pytest.mark.parametrize(("field", "limit"), sorted(TEXT_LIMITS.items()))
def test_each_long_text_is_kept_as_its_start_its_length_and_its_digest(
    setup: Setup, field: str, limit: int
) -> None:
    for method, sent, lands_in in LONG_CALLS:
        if lands_in != field:
            continue
        code, trailers = _call(setup, "officer-portal", method, sent)
        receipt = _receipt_of(trailers, setup)
        ((_, data),) = setup.gateway.audit.entries(receipt.leaf_index, receipt.leaf_index + 1)
        kept = getattr(AuditEntry.decode(data), field)
        (text,) = [value for value in SENT[field] if value[:50] == kept[:50]]
        assert len(kept) == limit
        assert text.startswith(kept.split("…")[0])
        assert (
            f"[{len(text)} characters, sha256 {hashlib.sha256(text.encode()).hexdigest()}]" in kept
        )
        assert code != grpc.StatusCode.OK
