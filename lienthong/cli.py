"""The ``lienthong`` command line."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from lienthong.config import ConfigError, StackConfig, load_config
from lienthong.logs import configure_logging

DEFAULT_CONFIG = Path("config/dev.toml")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["certs"]:
        # Handed over whole, so that `lienthong certs --help` is the PKI tool's own help.
        from certs.__main__ import main as certs_main  # noqa: PLC0415 - only this command needs it

        return certs_main(words[1:])
    parser = _parser()
    arguments = parser.parse_args(words)
    if arguments.command == "policy":
        return _policy_check(arguments.policy)
    try:
        config = load_config(arguments.config)
    except ConfigError as error:
        sys.stderr.write(f"lienthong: {error}\n")
        return 2
    return int(arguments.handler(arguments, config) or 0)


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("LIENTHONG_CONFIG", DEFAULT_CONFIG)),
        help=f"configuration file (default: $LIENTHONG_CONFIG or {DEFAULT_CONFIG})",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lienthong",
        description="gRPC interoperability gateway between the civil-status registry and the "
        "national population database.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    certs = commands.add_parser(
        "certs", help="development PKI: init, show (lienthong certs --help)", add_help=False
    )
    certs.add_argument("args", nargs=argparse.REMAINDER)

    policy = commands.add_parser("policy", help="access policy tools")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_commands.add_parser(
        "check", help="check a policy file against the contracts (methods, identities, purposes)"
    )
    check.add_argument("policy", type=Path, help="the policy file, e.g. config/policy.toml")

    _audit_parser(commands)

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=("gateway", "justice", "police"))
    _config_argument(serve)
    serve.set_defaults(handler=_serve)

    run = commands.add_parser(
        "run", help="start the whole stack, register sample births, run until interrupted"
    )
    _config_argument(run)
    run.set_defaults(handler=_run)

    demo = commands.add_parser(
        "demo", help="register the sample births through a running gateway and print them"
    )
    _config_argument(demo)
    demo.set_defaults(handler=_demo)

    statistics = commands.add_parser(
        "statistics",
        help="today's registration statistics per locality, as the ministry administrator",
    )
    statistics.add_argument(
        "unit_codes", nargs="*", help="province, district or commune codes (default: all)"
    )
    _config_argument(statistics)
    statistics.set_defaults(handler=_statistics)

    _reconcile_parser(commands)

    replay = commands.add_parser(
        "replay",
        help="replay the 2016 pilot through a running stack and compare with its figures",
    )
    replay.add_argument(
        "--count", type=int, default=88_982, help="registrations to send (default: the pilot's)"
    )
    replay.add_argument(
        "--concurrency", type=int, default=64, help="calls in flight at once (default 64)"
    )
    replay.add_argument(
        "--seed", type=int, default=2016, help="another seed registers other people (default 2016)"
    )
    _config_argument(replay)
    replay.set_defaults(handler=_replay)
    return parser


def _reconcile_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    reconcile = commands.add_parser(
        "reconcile",
        help="compare a locality's registrations with the population database; exit 1 on findings",
    )
    reconcile.add_argument("unit_code", help="province, district or commune code")
    reconcile.add_argument(
        "--from", dest="start", type=dt.date.fromisoformat, help="first registration date "
        "(YYYY-MM-DD; default today)"
    )  # fmt: skip
    reconcile.add_argument(
        "--to", dest="end", type=dt.date.fromisoformat, help="last registration date (default: "
        "the first)"
    )  # fmt: skip
    reconcile.add_argument(
        "--pending-hours", type=float, help="report PINs pending longer (default 24)"
    )
    reconcile.add_argument(
        "--repair", action="store_true", help="queue the repairs (ministry administrator only)"
    )
    reconcile.add_argument(
        "--jsonl", type=Path, help="also write each finding to this file as a JSON line"
    )
    reconcile.add_argument(
        "--request-id", help="the run's UUID: repeating it repairs nothing twice (default new)"
    )
    _config_argument(reconcile)
    reconcile.set_defaults(handler=_reconcile)


def _audit_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser(
        "audit", help="the gateway's audit log: verify, tail, search, export"
    )
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="replay the log (or an export) against its signed checkpoints"
    )
    verify.add_argument("--export", type=Path, help="verify this export file instead of the log")
    verify.add_argument(
        "--checkpoint", type=Path, help="a signed checkpoint kept earlier: detect truncation"
    )
    tail = audit_commands.add_parser("tail", help="the latest exchanges, one JSON line each")
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many (default 20)")
    search = audit_commands.add_parser("search", help="exchanges matching filters, as JSON lines")
    search.add_argument("--caller", help="caller identity (SPIFFE ID)")
    search.add_argument("--method", help="full method, /package.Service/Method")
    search.add_argument("--status", help="status code name, e.g. PERMISSION_DENIED")
    search.add_argument("--request-id", help="the caller's request id")
    search.add_argument("--since", type=_datetime, help="recorded at or after (ISO 8601)")
    search.add_argument("--until", type=_datetime, help="recorded before (ISO 8601)")
    search.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    export = audit_commands.add_parser(
        "export", help="write entries [start, end) with a signed checkpoint and inclusion proofs"
    )
    export.add_argument("--start", type=int, required=True, help="first leaf index")
    export.add_argument("--end", type=int, required=True, help="leaf index after the last")
    export.add_argument("--out", type=Path, required=True, help="the export file to write")
    for command in (verify, tail, search, export):
        _config_argument(command)
        command.set_defaults(handler=_audit)
    verify.add_argument(
        "--vkey", help="the log's verifier key (text or file); default: from the signing key"
    )


def _datetime(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _audit(arguments: argparse.Namespace, config: StackConfig) -> int:
    from gateway.audit import tools  # noqa: PLC0415
    from gateway.audit.store import AuditLog, CompletionQuery  # noqa: PLC0415
    from lienthong.db import make_engine  # noqa: PLC0415
    from lienthong.signed_note import NoteVerifier, load_signer  # noqa: PLC0415

    audit = config.gateway.audit
    signer = load_signer(audit.origin, audit.signing_key.read_bytes())
    engine = make_engine(audit.database_url)
    log = AuditLog(engine, signer)
    out = sys.stdout
    try:
        if arguments.audit_command == "verify":
            vkey = arguments.vkey or signer.verifier_key()
            if Path(vkey).is_file():
                vkey = Path(vkey).read_text(encoding="utf-8").strip()
            verifier = NoteVerifier(vkey)
            if arguments.export:
                result = tools.verify_export(arguments.export, verifier)
            else:
                kept = (
                    arguments.checkpoint.read_text(encoding="utf-8")
                    if arguments.checkpoint
                    else None
                )
                result = tools.verify_log(engine, verifier, kept_checkpoint=kept)
            for problem in result.problems:
                out.write(f"FAIL {problem}\n")
            if result.first_bad_index is not None:
                out.write(f"first bad index: {result.first_bad_index}\n")
            verdict = "OK" if result.ok else "FAILED"
            out.write(f"{verdict}: {result.entries} entries, {result.checkpoints} checkpoints\n")
            return 0 if result.ok else 1
        if arguments.audit_command == "export":
            count = tools.export(log, arguments.start, arguments.end, arguments.out)
            out.write(f"wrote {count} entries to {arguments.out}\n")
            return 0
        if arguments.audit_command == "tail":
            query = CompletionQuery(limit=arguments.lines, newest_first=True)
            found = list(reversed(log.completions(query)))
        else:
            query = CompletionQuery(
                caller=arguments.caller,
                method=arguments.method,
                status=arguments.status,
                request_id=arguments.request_id,
                recorded_from=arguments.since,
                recorded_to=arguments.until,
                limit=arguments.limit,
            )
            found = log.completions(query)
        for index, entry in found:
            out.write(json.dumps({"leaf_index": index, **asdict(entry)}, ensure_ascii=False) + "\n")
        return 0
    finally:
        engine.dispose()


def _policy_check(path: Path) -> int:
    from gateway.policy import PolicyError, load_policy  # noqa: PLC0415
    from lienthong.contracts import methods  # noqa: PLC0415

    try:
        policy = load_policy(path, methods())
    except PolicyError as error:
        sys.stderr.write(f"lienthong: {error}\n")
        return 1
    callers = {caller for caller, _ in policy.grants}
    prefixes = {f"{prefix}/*" for prefix, _ in policy.prefix_grants}
    grants = len(policy.grants) + len(policy.prefix_grants)
    sys.stdout.write(
        f"{path}: valid; {grants} (caller, method) grants for {len(callers | prefixes)} callers\n"
    )
    return 0


def _serve(arguments: argparse.Namespace, config: StackConfig) -> int:
    configure_logging(arguments.service)
    # Each service imports only its own composition root.
    if arguments.service == "gateway":
        from gateway.compiled import exec_compiled  # noqa: PLC0415
        from gateway.policy import PolicyError  # noqa: PLC0415

        try:
            exec_compiled(config.gateway)
        except (ConfigError, PolicyError) as error:
            sys.stderr.write(f"lienthong: {error}\n")
            return 2
    elif arguments.service == "justice":
        from justice_adapter.server import serve as serve_justice  # noqa: PLC0415

        serve_justice(config.justice)
    else:
        from police_adapter.server import serve as serve_police  # noqa: PLC0415

        serve_police(config.police)
    return 0


def _run(_arguments: argparse.Namespace, config: StackConfig) -> int:
    from lienthong.stack import StackError, run_stack  # noqa: PLC0415

    configure_logging("stack", stream=sys.stderr)
    try:
        run_stack(config)
    except StackError as error:
        sys.stderr.write(f"lienthong: {error}\n")
        return 1
    return 0


def _demo(_arguments: argparse.Namespace, config: StackConfig) -> int:
    from lienthong.demo import format_table, register_samples  # noqa: PLC0415
    from lienthong.reference import code_lists  # noqa: PLC0415

    registrations = register_samples(
        config.gateway.listen, config.demo_tls, config.pki_directory, code_lists()
    )
    sys.stdout.write(format_table(registrations, code_lists()) + "\n")
    return 0


def _statistics(arguments: argparse.Namespace, config: StackConfig) -> int:
    from lienthong.demo import statistics_of, statistics_table  # noqa: PLC0415
    from lienthong.reference import code_lists  # noqa: PLC0415
    from lienthong.tls import secure_channel  # noqa: PLC0415

    with secure_channel(config.gateway.listen, config.demo_tls.read()) as channel:
        response = statistics_of(channel, arguments.unit_codes)
    sys.stdout.write(statistics_table(response, code_lists()) + "\n")
    return 0


def _reconcile(arguments: argparse.Namespace, config: StackConfig) -> int:
    from lienthong import reconcile, validation  # noqa: PLC0415 - only this command needs them
    from lienthong.reference import code_lists  # noqa: PLC0415
    from lienthong.tls import secure_channel  # noqa: PLC0415

    start = arguments.start or validation.today()
    hours = arguments.pending_hours
    with secure_channel(config.gateway.listen, config.demo_tls.read()) as channel:
        outcome = reconcile.reconcile(
            channel,
            arguments.unit_code,
            start=start,
            end=arguments.end or start,
            repair=arguments.repair,
            pending_threshold=None if hours is None else dt.timedelta(hours=hours),
            request_id=arguments.request_id,
        )
    if arguments.jsonl is not None:
        with arguments.jsonl.open("w", encoding="utf-8") as out:
            reconcile.write_jsonl(outcome.findings, out)
    sys.stdout.write(reconcile.findings_table(outcome, code_lists()) + "\n")
    return 1 if outcome.findings else 0


def _replay(arguments: argparse.Namespace, config: StackConfig) -> int:
    from lienthong import replay  # noqa: PLC0415 - only this command needs it
    from lienthong.demo import statistics_of  # noqa: PLC0415
    from lienthong.reference import code_lists  # noqa: PLC0415
    from lienthong.tls import secure_channel  # noqa: PLC0415

    codes = code_lists()
    with secure_channel(config.gateway.listen, config.demo_tls.read()) as channel:
        before = statistics_of(channel, replay.LOCALITIES)
    outcome = replay.replay(
        config.gateway.listen,
        config.demo_tls,
        config.pki_directory,
        codes,
        count=arguments.count,
        concurrency=arguments.concurrency,
        seed=arguments.seed,
    )
    with secure_channel(config.gateway.listen, config.demo_tls.read()) as channel:
        left = replay.wait_for_pins(channel)
        after = statistics_of(channel, replay.LOCALITIES)
    rate = outcome.sent / outcome.seconds if outcome.seconds else 0.0
    sys.stdout.write(
        f"Replayed {outcome.sent} registrations in {outcome.seconds:.1f} s ({rate:,.0f}/s); "
        f"answers: {dict(outcome.codes)}; PIN status on answer: {dict(outcome.pin_status)}; "
        f"still pending now: {left}\n\n"
    )
    sys.stdout.write(replay.comparison_table(before, after, codes) + "\n")
    return 0 if set(outcome.codes) == {"OK"} and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
