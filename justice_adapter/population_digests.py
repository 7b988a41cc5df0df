"""The population database's side of a reconciliation, read through the gateway.

``CitizenDigests`` is the narrow interface reconciliation needs; ``GatewayCitizenDigests``
implements it over CitizenService.ListCitizenDigests, an audited exchange like any other.
Only digests cross: the population database sends no field value.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Protocol

import grpc
from google.protobuf import timestamp_pb2

from lienthong import metadata
from lienthong.errors import Unavailable
from lienthong.population.v1 import citizen_service_pb2, citizen_service_pb2_grpc

PURPOSE = "reconciliation"


class CitizenDigests(Protocol):
    """What reconciliation needs of the population database."""

    def list(
        self, province_code: str, created_from: dt.datetime, salt: bytes
    ) -> Iterator[citizen_service_pb2.CitizenDigest]:
        """Every record of the province created since ``created_from``, in PIN order.

        Raises Unavailable when they cannot be read now.
        """
        ...


class GatewayCitizenDigests:
    """Reads the digests with ListCitizenDigests through the gateway."""

    def __init__(self, channel: grpc.Channel, *, timeout: float = 300.0) -> None:
        """Use ``channel``, a mutual-TLS channel to the gateway; the caller owns and closes it."""
        self._stub = citizen_service_pb2_grpc.CitizenServiceStub(channel)
        self._timeout = timeout

    def list(
        self, province_code: str, created_from: dt.datetime, salt: bytes
    ) -> Iterator[citizen_service_pb2.CitizenDigest]:
        """Stream the records' digests, batch by batch."""
        since = timestamp_pb2.Timestamp()
        since.FromDatetime(created_from)
        request = citizen_service_pb2.ListCitizenDigestsRequest(
            province_code=province_code, create_time_from=since, salt=salt
        )
        call = self._stub.ListCitizenDigests(
            request,
            timeout=self._timeout,
            metadata=((metadata.REQUEST_ID, str(uuid.uuid4())), (metadata.PURPOSE, PURPOSE)),
        )
        try:
            for batch in call:
                yield from batch.citizens
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
            raise Unavailable(
                f"the population database's records could not be read: {code.name}"
            ) from error
