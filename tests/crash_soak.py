"""Crash soak (issue 8): kill -9 the services during a pilot replay, restart them, then check.

The gateway, the Justice adapter and the Police adapter run as processes of their own
(`lienthong serve`), as in production. While the 2016 pilot is replayed through the gateway,
a randomly chosen service is killed with SIGKILL at a random moment and started again, over
and over. Clients send again, with the same request ID, whatever failed meanwhile. When the
replay is over and the last PIN has arrived, the soak checks what users must be able to
trust: no registration lost or duplicated, no PIN issued twice or to two registrations, each
registration eligible for a PIN holding exactly one active PIN on both sides, the audit log
verifying, every answer the client received carrying a receipt of an exchange in the log, and
no name or date of birth in any log line, metric or audit entry.

    .venv/bin/python tests/crash_soak.py --registrations 88982 --kills 40 --gap 5 40  # make soak

`tests/test_crash_soak.py` runs a shorter one in `make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy
from dev_config import wait_serving, write_dev_config

from certs.pki import init_dev_pki
from gateway.audit import merkle
from gateway.audit.entry import AuditEntry
from lienthong import pilot, replay
from lienthong.civilregistry.v1 import birth_registration_pb2, birth_registration_service_pb2
from lienthong.config import StackConfig, load_config
from lienthong.population.v1 import citizen_pb2
from lienthong.reference import code_lists
from lienthong.signed_note import NoteError, NoteVerifier, parse_receipt
from lienthong.tls import secure_channel

PROJECT = Path(__file__).resolve().parent.parent
SERVICES = ("police", "justice", "gateway")  # upstreams first, as `lienthong run` starts them
DATABASES = ("justice", "police", "audit")
START_TIMEOUT = 60.0
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432"


@dataclass(frozen=True)
class SoakSettings:
    """How long and how hard to soak."""

    registrations: int
    kills: int
    backend: str = "sqlite"
    seed: int = 2016
    concurrency: int = 32
    # Seconds between a service being healthy again and the next kill.
    gap: tuple[float, float] = (0.2, 1.5)


@dataclass
class SoakReport:
    """What the soak did and found; ``problems`` is empty when every guarantee held."""

    registrations: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    kills_during_replay: int = 0
    replay_seconds: float = 0.0
    last_pin_seconds: float = 0.0
    retries: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    pins_issued: int = 0
    receipts_checked: int = 0
    audit_verify: str = ""
    scanned: Counter[str] = field(default_factory=Counter)
    privacy_hits: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The report as the soak prints it."""
        kills = ", ".join(f"{name} {count}" for name, count in sorted(self.kills.items()))
        lines = [
            (
                f"registrations replayed: {self.registrations:,} in "
                f"{self.replay_seconds:.1f} s ({self.retries:,} calls sent again)"
            ),
            f"last PIN delivered {self.last_pin_seconds:.1f} s after the replay's end",
            f"kills (SIGKILL) during the replay: {self.kills_during_replay} ({kills})",
            f"final answers: {dict(self.answers)}",
            f"PINs issued and matching on both sides: {self.pins_issued:,}",
            f"receipts (every answer's) checked against the audit log: {self.receipts_checked:,}",
            f"lienthong audit verify: {self.audit_verify}",
            "privacy scan: "
            + ", ".join(f"{count:,} {what}" for what, count in sorted(self.scanned.items()))
            + f"; {len(self.privacy_hits)} hits",
        ]
        lines += [f"PROBLEM: {problem}" for problem in self.problems]
        lines += [f"PRIVACY HIT: {hit}" for hit in self.privacy_hits[:20]]
        return "\n".join(lines)


def database_urls(backend: str, directory: Path, tag: str) -> dict[str, str]:
    """Fresh databases of ``backend``; PostgreSQL ones are dropped first, made by the services."""
    if backend == "sqlite":
        return {name: f"sqlite:///{directory / f'{name}.db'}" for name in DATABASES}
    admin = sqlalchemy.create_engine(f"{POSTGRES}/postgres", isolation_level="AUTOCOMMIT")
    urls = {}
    with admin.connect() as connection:
        for name in DATABASES:
            database = f"lienthong_soak_{tag}_{name}"
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            urls[name] = f"{POSTGRES}/{database}"
    admin.dispose()
    return urls


class ServiceProcess:
    """One service as `lienthong serve NAME`, its output appended to its log file."""

    def __init__(self, name: str, config: StackConfig, address: str) -> None:
        self.name, self._config, self.address = name, config, address
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (the last one must have exited)."""
        log_path = self._config.log_directory / f"{self.name}.jsonl"
        command = [
            sys.executable, "-m", "lienthong.cli", "serve", self.name,
            "--config", str(self._config.source),
        ]  # fmt: skip
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT
            )

    def wait_healthy(self) -> None:
        """Return once the service answers its health check SERVING; RuntimeError if it died."""
        if self._process is None:
            raise RuntimeError(f"{self.name} was not started")
        tls = self._config.demo_tls.read()
        if problem := wait_serving(self.address, tls, self._process, START_TIMEOUT):
            raise RuntimeError(f"{self.name} {problem}; see its log")

    def kill(self) -> None:
        """SIGKILL: no drain, no last checkpoint, nothing flushed but what was committed."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()

    def stop(self) -> None:
        """SIGTERM, as an operator stops a service; SIGKILL if it does not stop."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


class Killer(threading.Thread):
    """Kills the services, one at a time, at points of the replay spread evenly over it.

    The replay does not send the registration at a kill's point before that kill is done
    (``hold``), so every kill falls during the replay, on a fast machine or a slow one. A
    kill also waits for the last restarted service to be healthy and a random gap.
    """

    def __init__(
        self, services: dict[str, ServiceProcess], settings: SoakSettings, report: SoakReport
    ) -> None:
        super().__init__(name="killer", daemon=True)
        self._services, self._settings, self._report = services, settings, report
        self._random = random.Random(settings.seed)  # noqa: S311 - test schedule
        spacing = settings.registrations / (settings.kills + 1)
        self._points = [round(spacing * (kill + 1)) for kill in range(settings.kills)]
        self._reached = threading.Condition()
        self._sent = 0
        self._done = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def hold(self, index: int) -> None:
        """Called by the replay before it sends registration ``index``: wait for the kills
        due before it (or for the killer to give up)."""
        with self._reached:
            self._sent = index
            self._reached.notify_all()
            self._reached.wait_for(
                lambda: (
                    self._kills_due(index) <= self._done
                    or self.error is not None
                    or self.stop.is_set()
                )
            )

    def finish(self) -> None:
        """The replay is over: no more kills."""
        self.stop.set()
        with self._reached:
            self._reached.notify_all()

    def _kills_due(self, index: int) -> int:
        return sum(point <= index for point in self._points)

    def run(self) -> None:
        """Wait for the next point and the gap, kill, restart, wait until healthy; again."""
        try:
            order: list[str] = []
            for point in self._points:
                if self.stop.wait(self._random.uniform(*self._settings.gap)):
                    return
                with self._reached:
                    if (
                        not self._reached.wait_for(
                            lambda point=point: self._sent >= point or self.stop.is_set()
                        )
                        or self.stop.is_set()
                    ):
                        return
                if not order:  # each service once in every three kills, in a random order
                    order = self._random.sample(SERVICES, len(SERVICES))
                service = self._services[order.pop()]
                service.kill()
                self._report.kills[service.name] += 1
                with self._reached:
                    self._done += 1
                    self._reached.notify_all()
                service.start()
                service.wait_healthy()
        except BaseException as error:  # noqa: BLE001 - reported by the soak
            self.error = error
        finally:
            with self._reached:
                self._reached.notify_all()


def run_soak(
    settings: SoakSettings,
    directory: Path,
    out: io.TextIOBase | None = None,
    urls: dict[str, str] | None = None,
) -> SoakReport:
    """Soak the stack in ``directory`` (fresh) and return what was found.

    ``urls`` names empty databases ("justice", "police", "audit"); by default fresh ones of
    ``settings.backend`` are made.
    """
    sink = out or io.StringIO()
    report = SoakReport(registrations=settings.registrations)
    pki = init_dev_pki(directory / "pki")
    (directory / "log").mkdir(parents=True, exist_ok=True)
    urls = urls or database_urls(settings.backend, directory, str(os.getpid()))
    config = load_config(write_dev_config(directory, pki.directory, urls, "soak.toml"))
    addresses = {
        "police": config.police.listen,
        "justice": config.justice.listen,
        "gateway": config.gateway.listen,
    }
    services = {name: ServiceProcess(name, config, addresses[name]) for name in SERVICES}
    metrics = ""
    try:
        for service in services.values():
            service.start()
            service.wait_healthy()
        killer = Killer(services, settings, report)
        killer.start()
        outcome = replay.replay(
            config.gateway.listen,
            config.demo_tls,
            pki.directory,
            code_lists(),
            count=settings.registrations,
            concurrency=settings.concurrency,
            seed=settings.seed,
            officers=0,
            out=sink,  # type: ignore[arg-type]
            keep_receipts=True,
            before_send=killer.hold,
        )
        killer.finish()
        report.kills_during_replay = sum(report.kills.values())
        killer.join()
        if killer.error is not None:
            report.problems.append(f"restarting a service failed: {killer.error}")
            for service in services.values():  # whatever state the killer left
                service.stop()
                service.start()
                service.wait_healthy()
        report.replay_seconds, report.retries = outcome.seconds, outcome.retries
        report.answers = Counter(outcome.codes)
        replay_over = time.monotonic()
        with secure_channel(config.gateway.listen, config.demo_tls.read()) as channel:
            pending = replay.wait_for_pins(channel, timeout=300)
        report.last_pin_seconds = time.monotonic() - replay_over
        if pending:
            report.problems.append(f"{pending} registrations still wait for their PIN")
        if config.gateway.metrics_listen:
            with urllib.request.urlopen(f"http://{config.gateway.metrics_listen}/metrics") as reply:
                metrics = reply.read().decode("utf-8")
    finally:
        for name in reversed(SERVICES):
            services[name].stop()
    report.audit_verify = _audit_verify(config)
    requests = list(
        pilot.pilot_registrations(code_lists(), settings.registrations, seed=settings.seed)
    )
    _check_databases(urls, requests, report)
    _check_receipts(outcome.receipts, urls["audit"], pki.directory, report)
    _scan_privacy(requests, config.log_directory, metrics, urls["audit"], report)
    if outcome.codes.get("OK", 0) != settings.registrations:
        report.problems.append(f"not every registration was answered OK: {dict(outcome.codes)}")
    if report.kills_during_replay < settings.kills:
        report.problems.append(
            f"only {report.kills_during_replay} kills during the replay, {settings.kills} wanted"
        )
    return report


def _audit_verify(config: StackConfig) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "lienthong.cli", "audit", "verify", "--config", str(config.source)],
        capture_output=True, text=True, cwd=PROJECT, check=False,
    )  # fmt: skip
    last = (result.stdout.strip().splitlines() or [result.stderr.strip()])[-1]
    return f"exit {result.returncode}: {last}"


def _check_databases(
    urls: dict[str, str],
    requests: list[birth_registration_service_pb2.RegisterBirthRequest],
    report: SoakReport,
) -> None:
    """No registration lost or doubled; PINs unique and the same on both sides."""
    justice = sqlalchemy.create_engine(urls["justice"])
    police = sqlalchemy.create_engine(urls["police"])
    try:
        with justice.connect() as connection:
            registrations = connection.execute(
                sqlalchemy.text("SELECT name, request_id, pin, pin_status FROM birth_registration")
            ).all()
        with police.connect() as connection:
            citizens = connection.execute(
                sqlalchemy.text("SELECT pin, state, birth_registration FROM citizen")
            ).all()
    finally:
        justice.dispose()
        police.dispose()
    sent = Counter(request.request_id for request in requests)
    stored = Counter(row.request_id for row in registrations)
    if lost := set(sent) - set(stored):
        report.problems.append(f"{len(lost)} registrations lost")
    if doubled := [key for key, count in stored.items() if count > 1]:
        report.problems.append(f"{len(doubled)} registrations stored more than once")
    if strange := set(stored) - set(sent):
        report.problems.append(f"{len(strange)} registrations nobody sent")
    expected = pilot.expected_counts(len(requests))["pins_issued"]
    issued = {
        row.name: row.pin
        for row in registrations
        if row.pin_status == birth_registration_pb2.PIN_STATUS_ISSUED
    }
    if len(issued) != expected:
        report.problems.append(f"{len(issued)} registrations hold a PIN, {expected} eligible")
    if len(set(issued.values())) != len(issued):
        report.problems.append("one PIN is held by two registrations in the registry")
    by_registration: dict[str, list[str]] = {}
    for citizen in citizens:
        by_registration.setdefault(citizen.birth_registration, []).append(citizen.pin)
    if several := [name for name, pins in by_registration.items() if len(pins) > 1]:
        report.problems.append(f"{len(several)} registrations were issued more than one PIN")
    active = {
        row.birth_registration: row.pin
        for row in citizens
        if row.state == citizen_pb2.CITIZEN_STATE_ACTIVE
    }
    if active != issued:
        differing = set(active.items()) ^ set(issued.items())
        report.problems.append(f"{len(differing)} PINs differ between registry and population")
    report.pins_issued = len(set(active.items()) & set(issued.items()))


def _check_receipts(
    receipts: list[tuple[str, bytes]], audit_url: str, pki: Path, report: SoakReport
) -> None:
    """Every receipt the client got opens with the log's key and names, at its leaf, the
    completion of an exchange with the status the client saw; every OK answer had one."""
    verifier = NoteVerifier((pki / "audit-log.vkey").read_text(encoding="utf-8").strip())
    engine = sqlalchemy.create_engine(audit_url)
    try:
        with engine.connect() as connection:
            for code, note in receipts:
                try:
                    receipt = parse_receipt(verifier.open(note.decode("utf-8")))
                except (NoteError, UnicodeDecodeError) as error:
                    report.problems.append(f"a receipt does not verify: {error}")
                    continue
                stored = connection.execute(
                    sqlalchemy.text("SELECT entry FROM audit_entry WHERE leaf_index = :index"),
                    {"index": receipt.leaf_index},
                ).scalar()
                data = bytes(stored) if stored is not None else b""
                entry = AuditEntry.decode(data) if data else None
                if (
                    entry is None
                    or merkle.leaf_hash(data) != receipt.leaf_hash
                    or entry.exchange_id != receipt.exchange_id
                    or entry.kind != "completion"
                    or entry.status != code
                ):
                    report.problems.append(f"receipt of leaf {receipt.leaf_index} not in the log")
                    continue
                report.receipts_checked += 1
    finally:
        engine.dispose()
    answered_ok = report.answers.get("OK", 0)
    if (ok := sum(code == "OK" for code, _ in receipts)) != answered_ok:
        report.problems.append(f"{ok} receipts of OK answers for {answered_ok} OK answers")


def _personal_strings(
    requests: list[birth_registration_service_pb2.RegisterBirthRequest],
) -> set[str]:
    """The names (child, parents, declarant) and the children's dates of birth, as text."""
    found: set[str] = set()
    for request in requests:
        registration = request.birth_registration
        for name in (
            registration.child.name,
            registration.father.name,
            registration.mother.name,
            registration.declarant.name,
        ):
            parts = [name.family_name, name.middle_name, name.given_name]
            full = " ".join(part for part in parts if part)
            if full.count(" ") >= 1:  # a lone word could be a place name
                found.add(full)
        born = registration.child.date_of_birth
        found.add(f"{born.year:04d}-{born.month:02d}-{born.day:02d}")
        found.add(f"{born.day:02d}/{born.month:02d}/{born.year:04d}")
        found.add(f"{born.day}/{born.month}/{born.year}")
    return {unicodedata.normalize("NFC", text).casefold() for text in found}


_WORDS = re.compile(r"\w+")
_DATES = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4}")


def _candidates(text: str, longest: int) -> set[str]:
    """Every run of 2 to ``longest`` words and every date in ``text``, as the personal
    strings are written: NFC, case-folded, words one space apart.

    Looking each up in a set keeps the scan linear in the text, whatever the number of
    registrations.
    """
    folded = unicodedata.normalize("NFC", text).casefold()
    found = set(_DATES.findall(folded))
    words = _WORDS.findall(folded)
    for size in range(2, longest + 1):
        found.update(" ".join(words[i : i + size]) for i in range(len(words) - size + 1))
    return found


def _scan_privacy(
    requests: list[birth_registration_service_pb2.RegisterBirthRequest],
    log_directory: Path,
    metrics: str,
    audit_url: str,
    report: SoakReport,
) -> None:
    """Search every log line, metric line and audit entry for the personal strings."""
    personal = _personal_strings(requests)

    longest = max(value.count(" ") + 1 for value in personal)

    def scan(what: str, text: str) -> None:
        report.scanned[what] += 1
        with contextlib.suppress(ValueError):  # JSON escapes non-ASCII: compare decoded text
            text = json.dumps(json.loads(text), ensure_ascii=False)
        report.privacy_hits.extend(
            f"{what}: {value!r}" for value in sorted(_candidates(text, longest) & personal)
        )

    for path in sorted(log_directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            scan("log lines", line)
    for line in metrics.splitlines():
        scan("metric lines", line)
    engine = sqlalchemy.create_engine(audit_url)
    try:
        with engine.connect() as connection:
            for (entry,) in connection.execute(sqlalchemy.text("SELECT entry FROM audit_entry")):
                scan("audit entries", bytes(entry).decode("utf-8"))
    finally:
        engine.dispose()


def main() -> int:
    """Run the soak and print its report; exit 1 when a guarantee did not hold."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=88_982)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=2016)
    parser.add_argument(
        "--gap",
        type=float,
        nargs=2,
        default=(0.2, 1.5),
        metavar=("MIN", "MAX"),
        help="seconds from a restarted service being healthy to the next kill",
    )
    arguments = parser.parse_args()
    settings = SoakSettings(
        arguments.registrations, arguments.kills, arguments.backend, arguments.seed,
        arguments.concurrency, tuple(arguments.gap),
    )  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="crash_soak-") as directory:
        report = run_soak(settings, Path(directory), out=sys.stderr)  # type: ignore[arg-type]
    sys.stdout.write(report.summary() + "\n")
    sys.stdout.write(f"soak: {time.monotonic() - started:.0f} s in all, {settings.backend}\n")
    return 1 if report.problems or report.privacy_hits else 0


if __name__ == "__main__":
    sys.exit(main())
