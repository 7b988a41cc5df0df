"""The client side of a reconciliation: run it through the gateway, tabulate, export."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from google.protobuf import duration_pb2, json_format

from lienthong import metadata, validation
from lienthong.calendar.v1 import date_pb2
from lienthong.civilregistry.v1 import reconciliation_service_pb2 as rc
from lienthong.civilregistry.v1 import reconciliation_service_pb2_grpc as rc_grpc
from lienthong.demo import columns, locality_name

if TYPE_CHECKING:
    from collections.abc import Iterable

    import grpc

    from lienthong.reference import CodeLists

PURPOSE = "reconciliation"


@dataclass(frozen=True)
class Outcome:
    """What a run found, and its summary."""

    findings: list[rc.Finding]
    summary: rc.ReconciliationSummary


def reconcile(  # noqa: PLR0913 - one request's fields, keyword-only after the locality
    channel: grpc.Channel,
    unit_code: str,
    *,
    start: dt.date,
    end: dt.date,
    repair: bool = False,
    pending_threshold: dt.timedelta | None = None,
    request_id: str | None = None,
    timeout: float = 600.0,
) -> Outcome:
    """Run Reconcile for ``unit_code`` from ``start`` to ``end`` and collect the stream."""
    request = rc.ReconcileRequest(
        request_id=request_id or str(uuid.uuid4()),
        unit_code=unit_code,
        start_date=_date(start),
        end_date=_date(end),
        repair=repair,
    )
    if pending_threshold is not None:
        request.pending_threshold.CopyFrom(duration_pb2.Duration())
        request.pending_threshold.FromTimedelta(pending_threshold)
    stub = rc_grpc.ReconciliationServiceStub(channel)
    findings: list[rc.Finding] = []
    summary = rc.ReconciliationSummary()
    for response in stub.Reconcile(
        request,
        timeout=timeout,
        metadata=((metadata.REQUEST_ID, request.request_id), (metadata.PURPOSE, PURPOSE)),
    ):
        findings.extend(response.findings)
        if response.HasField("summary"):
            summary = response.summary
    return Outcome(findings, summary)


def reconciled_today(channel: grpc.Channel, unit_codes: Iterable[str]) -> str:
    """One line: today's registrations of ``unit_codes`` against the population database."""
    day = validation.today()
    totals: Counter[str] = Counter()
    for unit_code in unit_codes:
        summary = reconcile(channel, unit_code, start=day, end=day).summary
        totals.update(
            registrations=summary.registrations,
            records=summary.citizen_records,
            findings=summary.findings,
        )
    return (
        f"{totals['registrations']} registrations compared with {totals['records']} citizen "
        f"records by salted digests: {totals['findings']} findings."
    )


def findings_table(outcome: Outcome, codes: CodeLists) -> str:
    """A row per registering unit and kind of finding, then the total."""
    counts: Counter[tuple[str, int]] = Counter()
    repairable: Counter[tuple[str, int]] = Counter()
    queued: Counter[tuple[str, int]] = Counter()
    for finding in outcome.findings:
        key = (finding.unit_code, finding.kind)
        counts[key] += 1
        repairable[key] += finding.repair_action != rc.REPAIR_ACTION_NONE
        queued[key] += finding.repair_queued
    header = ("locality", "finding", "count", "repairable", "repair queued")
    rows = [
        (
            locality_name(codes, unit),
            kind_name(kind),
            str(counts[unit, kind]),
            str(repairable[unit, kind]),
            str(queued[unit, kind]),
        )
        for unit, kind in sorted(counts)
    ]
    total = (
        "total",
        "",
        str(sum(counts.values())),
        str(sum(repairable.values())),
        str(sum(queued.values())),
    )
    summary = outcome.summary
    return (
        columns([header, *rows, total])
        + f"\n\n{summary.registrations} registrations compared with "
        f"{summary.citizen_records} citizen records; {summary.findings} findings, "
        f"{summary.repairs_queued} repairs queued."
    )


def kind_name(kind: int) -> str:
    """A finding kind without its prefix: "FIELD_MISMATCH"."""
    return rc.FindingKind.Name(kind).removeprefix("FINDING_KIND_")  # type: ignore[arg-type]


def write_jsonl(findings: list[rc.Finding], out: TextIO) -> None:
    """Each finding as one JSON line, in the protobuf JSON mapping."""
    out.writelines(
        json_format.MessageToJson(finding, indent=None, sort_keys=True) + "\n"
        for finding in findings
    )


def _date(day: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)
