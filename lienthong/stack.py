"""The whole stack on one machine: the three services as child processes, for `lienthong run`."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs.pki import init_dev_pki
from lienthong.civilregistry.v1 import birth_registration_pb2
from lienthong.config import StackConfig
from lienthong.demo import (
    format_table,
    latest_checkpoint,
    register_samples,
    statistics_of,
    statistics_table,
)
from lienthong.reconcile import reconciled_today
from lienthong.reference import Level, code_lists
from lienthong.tls import TlsMaterial, secure_channel

SERVICES = ("police", "justice", "gateway")  # upstreams first, so the gateway finds them
START_TIMEOUT = 60.0


class StackError(RuntimeError):
    """A service did not start; the message says which and where its log is."""


def run_stack(config: StackConfig, out: TextIO = sys.stdout) -> None:
    """Start every service, register the sample births, print them, run until interrupted."""
    init_dev_pki(config.pki_directory)
    config.log_directory.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with ExitStack() as cleanup:
        client_tls = config.demo_tls.read()
        addresses = {
            "police": config.police.listen,
            "justice": config.justice.listen,
            "gateway": config.gateway.listen,
        }
        processes = {}
        for name in SERVICES:  # each healthy before the next, which calls it, starts
            processes[name] = cleanup.enter_context(_ServiceProcess(name, config))
            _wait_healthy(name, addresses[name], client_tls, processes[name], config.log_directory)
        out.write(f"lienthong is running: gateway on {config.gateway.listen} (mutual TLS).\n\n")
        out.write("Registering sample births through the gateway...\n\n")
        registrations = register_samples(
            config.gateway.listen, config.demo_tls, config.pki_directory, code_lists()
        )
        with secure_channel(config.gateway.listen, client_tls) as channel:
            statistics = statistics_table(statistics_of(channel), code_lists())
            reconciled = reconciled_today(channel, _provinces(registrations))
            checkpoint = latest_checkpoint(channel)
        out.write(format_table(registrations, code_lists()) + "\n\n")
        out.write(
            "Today's registrations as the pilot reported them, asked by the ministry "
            "administrator:\n\n" + statistics + "\n\n"
        )
        out.write(
            "The registry reconciled with the population database (`lienthong reconcile`): "
            + reconciled
            + "\n\n"
        )
        out.write(
            "Every exchange is in the audit log; its latest checkpoint, signed by the gateway "
            "(verify with `lienthong audit verify`):\n\n" + checkpoint + "\n"
        )
        out.write(
            f"Logs (one JSON line per event; the gateway's has one per exchange): "
            f"{config.log_directory}/\n"
            "The stack keeps running; press Ctrl-C (or send SIGTERM) to stop it.\n"
        )
        out.flush()
        while not stop.wait(1.0):
            exited = [name for name, process in processes.items() if process.poll() is not None]
            if exited:
                raise StackError(f"{', '.join(exited)} stopped; see {config.log_directory}/")
        out.write("Stopping: draining in-flight calls...\n")
        out.flush()


class _ServiceProcess:
    """A service as a child process whose output goes to its log file; stopped on exit."""

    def __init__(self, name: str, config: StackConfig) -> None:
        self._name, self._config = name, config

    def __enter__(self) -> subprocess.Popen[bytes]:
        log_path = self._config.log_directory / f"{self._name}.jsonl"
        command = [
            sys.executable, "-m", "lienthong.cli", "serve", self._name,
            "--config", str(self._config.source),
        ]  # fmt: skip
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603
                command, stdout=log, stderr=subprocess.STDOUT
            )
        return self._process

    def __exit__(self, *_: object) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _provinces(registrations: list[birth_registration_pb2.BirthRegistration]) -> list[str]:
    """The provinces of the registering units, each once."""
    codes = code_lists()
    units = (
        codes.unit(Level(r.registration_unit.level), r.registration_unit.code)
        for r in registrations
    )
    return sorted({unit.province_code for unit in units if unit is not None})


def _wait_healthy(
    name: str, address: str, tls: TlsMaterial, process: subprocess.Popen[bytes], logs: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with secure_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise StackError(
                    f"{name} exited with status {process.returncode}; see {logs}/{name}.jsonl"
                )
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.RpcError:
                continue
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
    raise StackError(f"{name} did not become healthy on {address}; see {logs}/{name}.jsonl")
