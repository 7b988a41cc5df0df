"""lienthong.gateway.v1.AuditService over the audit log, served by the gateway itself."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Literal

from google.protobuf import timestamp_pb2

from gateway.audit.entry import AuditEntry
from gateway.audit.store import AuditLog, CompletionQuery, SignedCheckpoint
from lienthong.errors import FieldViolation, InvalidArgument, OutOfRange
from lienthong.gateway.v1 import audit_service_pb2, exchange_pb2

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class AuditApi:
    """The AuditService methods; each takes the request and the verified caller identity."""

    def __init__(self, log: AuditLog) -> None:
        """Serve ``log``."""
        self._log = log

    def _signed(self) -> SignedCheckpoint:
        # Sign now if the tree grew since the last checkpoint, so that the caller's own
        # exchanges up to this call can be proven at once.
        checkpoint = self._log.checkpoint()
        if checkpoint is None:  # unreachable: this very call's request entry is in the log
            raise OutOfRange("the audit log is empty")
        return checkpoint

    def GetLatestCheckpoint(
        self, _request: audit_service_pb2.GetLatestCheckpointRequest, _caller: str
    ) -> audit_service_pb2.GetLatestCheckpointResponse:
        """The latest signed checkpoint."""
        checkpoint = self._signed()
        return audit_service_pb2.GetLatestCheckpointResponse(
            checkpoint=audit_service_pb2.Checkpoint(
                origin=self._log.origin,
                tree_size=checkpoint.tree_size,
                root_hash=checkpoint.root_hash,
                signed_note=checkpoint.note,
            )
        )

    def GetInclusionProof(
        self, request: audit_service_pb2.GetInclusionProofRequest, _caller: str
    ) -> audit_service_pb2.GetInclusionProofResponse:
        """The inclusion proof of a leaf in a signed tree size."""
        if request.tree_size < 1 or not 0 <= request.leaf_index < request.tree_size:
            raise InvalidArgument(
                [FieldViolation("leaf_index", "must be at least 0 and below tree_size")]
            )
        self._within_signed(request.tree_size, "tree_size")
        leaf, hashes = self._log.inclusion_proof(request.leaf_index, request.tree_size)
        return audit_service_pb2.GetInclusionProofResponse(
            leaf_index=request.leaf_index,
            tree_size=request.tree_size,
            leaf_hash=leaf,
            hashes=hashes,
        )

    def GetConsistencyProof(
        self, request: audit_service_pb2.GetConsistencyProofRequest, _caller: str
    ) -> audit_service_pb2.GetConsistencyProofResponse:
        """The consistency proof between two signed tree sizes."""
        if not 1 <= request.first_tree_size <= request.second_tree_size:
            raise InvalidArgument(
                [
                    FieldViolation(
                        "first_tree_size", "must be at least 1 and at most second_tree_size"
                    )
                ]
            )
        self._within_signed(request.second_tree_size, "second_tree_size")
        hashes = self._log.consistency_proof(request.first_tree_size, request.second_tree_size)
        return audit_service_pb2.GetConsistencyProofResponse(
            first_tree_size=request.first_tree_size,
            second_tree_size=request.second_tree_size,
            hashes=hashes,
        )

    def ListExchanges(
        self, request: audit_service_pb2.ListExchangesRequest, caller: str
    ) -> audit_service_pb2.ListExchangesResponse:
        """The caller's own exchanges, filtered and paged in leaf order."""
        if request.caller and request.caller != caller:
            raise InvalidArgument(
                [FieldViolation("caller", "a caller may list only its own exchanges")]
            )
        if request.page_size < 0:
            raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
        limit = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        found = self._log.completions(
            CompletionQuery(
                caller=caller,
                method=request.method or None,
                request_id=request.request_id or None,
                recorded_from=_time(request, "start_time_from"),
                recorded_to=_time(request, "start_time_to"),
                after_leaf=_decode_token(request.page_token),
                limit=limit + 1,
            )
        )
        page = found[:limit]
        next_token = _encode_token(page[-1][0]) if len(found) > limit else ""
        return audit_service_pb2.ListExchangesResponse(
            exchanges=[_exchange(index, entry) for index, entry in page],
            next_page_token=next_token,
        )

    def _within_signed(self, size: int, field: str) -> None:
        signed = self._signed().tree_size
        if size > signed:
            raise OutOfRange(f"{field} {size} is beyond the latest checkpoint ({signed})")


def _time(
    request: audit_service_pb2.ListExchangesRequest,
    field: Literal["start_time_from", "start_time_to"],
) -> dt.datetime | None:
    if not request.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, field)
    try:
        return stamp.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            [FieldViolation(field, "must be a valid timestamp: years 1 to 9999, nanos below 1e9")]
        ) from None


def _encode_token(leaf_index: int) -> str:
    return base64.urlsafe_b64encode(str(leaf_index).encode()).decode()


def _decode_token(token: str) -> int:
    if not token:
        return -1
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token of this listing")]
        ) from None


def _stamp(text: str | None) -> timestamp_pb2.Timestamp | None:
    if text is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC))
    return stamp


def _exchange(leaf_index: int, entry: AuditEntry) -> exchange_pb2.Exchange:
    return exchange_pb2.Exchange(
        leaf_index=leaf_index,
        exchange_id=entry.exchange_id,
        caller=entry.caller or "",
        upstream=entry.upstream or "",
        method=entry.method,
        purpose=entry.purpose or "",
        on_behalf_of=entry.on_behalf_of or "",
        request_id=entry.request_id or "",
        start_time=_stamp(entry.start_time),
        end_time=_stamp(entry.end_time),
        status_code=entry.status_code or 0,
        request_bytes=entry.request_bytes or 0,
        response_bytes=entry.response_bytes or 0,
        request_sha256=bytes.fromhex(entry.request_sha256 or ""),
        response_sha256=bytes.fromhex(entry.response_sha256 or ""),
    )
