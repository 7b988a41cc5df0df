"""The ``lienthong`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lienthong.config import ConfigError, StackConfig, load_config
from lienthong.logs import configure_logging

DEFAULT_CONFIG = Path("config/dev.toml")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    if arguments.command == "certs":
        from certs.__main__ import main as certs_main  # noqa: PLC0415 - only this command needs it

        return certs_main(arguments.args)
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
    return parser


def _policy_check(path: Path) -> int:
    from gateway.policy import PolicyError, load_policy  # noqa: PLC0415
    from lienthong.contracts import methods  # noqa: PLC0415

    try:
        policy = load_policy(path, methods())
    except PolicyError as error:
        sys.stderr.write(f"lienthong: {error}\n")
        return 1
    callers = {caller for caller, _ in policy.grants}
    sys.stdout.write(
        f"{path}: valid; {len(policy.grants)} (caller, method) grants for {len(callers)} callers\n"
    )
    return 0


def _serve(arguments: argparse.Namespace, config: StackConfig) -> int:
    configure_logging(arguments.service)
    # Each service imports only its own composition root.
    if arguments.service == "gateway":
        from gateway.server import serve  # noqa: PLC0415

        serve(config.gateway)
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
    from lienthong.tls import secure_channel  # noqa: PLC0415

    with secure_channel(config.gateway.listen, config.demo_tls.read()) as channel:
        registrations = register_samples(channel, code_lists())
    sys.stdout.write(format_table(registrations, code_lists()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
