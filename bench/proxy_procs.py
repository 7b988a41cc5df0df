"""The processes of bench/proxy_bench.py: upstream, gateway, nginx; their CPU time; readiness.

Each service runs as its own child process so that its CPU time can be read from
``/proc/<pid>/stat`` (user + system time of every thread), the same way for all of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from certs.pki import DevPki

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
METHOD = "/lienthong.population.v1.CitizenService/VerifyCitizen"
SERVICE = "lienthong.population.v1.CitizenService"
PURPOSE = ("lienthong-purpose", "identity-verification")
START_TIMEOUT = 60.0
# nginx replaced `listen ... ssl http2` by the `http2 on` directive in 1.25.1.
HTTP2_DIRECTIVE_SINCE = (1, 25, 1)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A part of the benchmark could not be set up; the message says which and why."""


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (all their threads)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:  # fields[11], [12]: utime, stime (stat fields 14 and 15)
            total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (nginx's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Service:
    """A child process and the pids whose CPU time counts as its own."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    address: str
    with_children: bool = False

    def pids(self) -> list[int]:
        """The process, and its children when it has workers."""
        pid = self.process.pid
        return [pid, *children_of(pid)] if self.with_children else [pid]

    def stop(self) -> None:
        """Stop the process (and so its workers); kill it if it does not go in 15 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nginx: fast shutdown
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _spawn(  # noqa: PLR0913 - what to start, where, and how
    name: str,
    command: list[str],
    log: Path,
    address: str,
    *,
    with_children: bool = False,
    environment: dict[str, str] | None = None,
) -> Service:
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 - our own commands
            command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=environment
        )
    return Service(name, process, log, address, with_children=with_children)


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_ready(pki: DevPki, service: Service) -> None:
    """Wait until a call through ``service`` succeeds; BenchError if it exits or never does.

    The call presents the civil-status registry's certificate, as the load generator does.
    """
    paths = pki.paths("justice")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_certificate.read_bytes(),
        private_key=paths.private_key.read_bytes(),
        certificate_chain=paths.certificate.read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", "localhost")]
    deadline = time.monotonic() + START_TIMEOUT
    code = grpc.StatusCode.UNAVAILABLE
    with grpc.secure_channel(service.address, credentials, options=options) as channel:
        call = channel.unary_unary(METHOD, None, None)
        while time.monotonic() < deadline:
            if service.process.poll() is not None:
                raise BenchError(
                    f"{service.name} exited with status {service.process.returncode}:\n"
                    + _tail(service.log)
                )
            try:
                call(b"ready?", timeout=2.0, metadata=(PURPOSE,))
            except grpc.RpcError as error:
                code = error.code()
                time.sleep(0.2)
            else:
                return
    raise BenchError(f"{service.name} did not answer OK ({code.name}):\n" + _tail(service.log))


def start_upstream(pki: DevPki, directory: Path) -> Service:
    """The raw-bytes echo upstream (bench/proxy_upstream.py) on a free port."""
    port = free_port()
    command = [
        sys.executable, str(BENCH / "proxy_upstream.py"), "--port", str(port),
        "--pki", str(pki.directory),
    ]  # fmt: skip
    return _spawn("upstream", command, directory / "upstream.log", f"127.0.0.1:{port}")


def gateway_config(
    pki: DevPki, directory: Path, upstream: str, *, max_concurrent: int
) -> tuple[Path, str]:
    """Write the gateway's TOML configuration; return its path and the gateway's address.

    As config/dev.toml, with config/policy.toml (which grants the civil-registry
    ``VerifyCitizen`` for the purpose ``identity-verification``), the CRL, metrics, and the
    audit log in SQLite in ``directory``; only the per-caller rate limit is lifted, so that
    the load generator's single identity is never refused. The Justice and Police sections
    are there because the file must be complete; neither service is started.
    """
    listen = f"127.0.0.1:{free_port()}"
    pki_dir = pki.directory

    def q(value: object) -> str:  # a TOML basic string
        return json.dumps(str(value))

    def tls(system: str) -> str:
        return (
            f"ca_certificate = {q(pki.ca_certificate)}\n"
            f"certificate = {q(pki_dir / f'{system}.pem')}\n"
            f"private_key = {q(pki_dir / f'{system}.key')}\n"
        )

    text = f"""# Written by bench/proxy_bench.py.
pki_directory = {q(pki_dir)}
log_directory = {q(directory / "log")}

[gateway]
listen = {q(listen)}
policy = {q(REPO / "config" / "policy.toml")}
crls = [{q(pki_dir / "crl.pem")}]
metrics_listen = {q(f"127.0.0.1:{free_port()}")}

[gateway.audit]
database_url = {q(f"sqlite:///{directory / 'audit.db'}")}
signing_key = {q(pki_dir / "audit-log.key")}
origin = "lienthong.local/audit"

[gateway.limits]
rate_per_second = 1000000
burst = 1000000
max_concurrent = {max_concurrent}
max_message_bytes = 4194304
upstream_timeout = 30

[gateway.tls]
{tls("gateway-server")}
[gateway.upstream_tls]
{tls("gateway-client")}
[gateway.routes]
{q(SERVICE)} = {{ address = {q(upstream)}, identity = "spiffe://lienthong.local/mps/population" }}

[justice]
listen = "127.0.0.1:1"
database_url = {q(f"sqlite:///{directory / 'justice-unused.db'}")}
gateway = {q(listen)}
trusted_callers = ["spiffe://lienthong.local/gateway"]

[justice.tls]
{tls("justice")}
[police]
listen = "127.0.0.1:2"
database_url = {q(f"sqlite:///{directory / 'police-unused.db'}")}
trusted_callers = ["spiffe://lienthong.local/gateway"]

[police.tls]
{tls("police")}
[demo.tls]
{tls("justice")}"""
    path = directory / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path, listen


def build_dataplane() -> Path:
    """lienthong-gateway, built with the release profile (as it is deployed)."""
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--quiet", "--bin", "lienthong-gateway"],  # noqa: S607
        cwd=REPO,
        check=True,
    )
    return REPO / "target" / "release" / "lienthong-gateway"


def start_gateway(config: Path, listen: str, directory: Path, binary: Path) -> Service:
    """``lienthong serve gateway --config CONFIG``; its JSON lines go to gateway.jsonl.

    It runs ``binary`` (LIENTHONG_GATEWAY_BINARY): the service's process is then
    lienthong-gateway itself, whose CPU time is the proxy's.
    """
    command = [sys.executable, "-m", "lienthong.cli", "serve", "gateway", "--config", str(config)]
    environment = {**os.environ, "LIENTHONG_GATEWAY_BINARY": str(binary)}
    return _spawn("gateway", command, directory / "gateway.jsonl", listen, environment=environment)


def verify_audit(config: Path) -> str:
    """The last line of ``lienthong audit verify`` on the gateway's log."""
    command = [sys.executable, "-m", "lienthong.cli", "audit", "verify", "--config", str(config)]
    result = subprocess.run(  # noqa: S603 - our own command
        command, capture_output=True, text=True, check=False, cwd=REPO
    )
    lines = result.stdout.strip().splitlines() or [result.stderr.strip()]
    return lines[-1]


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (str(p) for p in (Path("/usr/sbin/nginx"),) if p.exists()), None
    )


def _nginx_usable(binary: str) -> bool:
    built = subprocess.run(  # noqa: S603 - the nginx found on PATH
        [binary, "-V"], capture_output=True, text=True, check=False
    ).stderr
    return (
        "--with-http_ssl_module" in built
        and "--with-http_v2_module" in built
        and "--without-http_grpc_module" not in built
    )


def ensure_nginx(say: Callable[[str], None]) -> str:
    """The nginx binary, installed from Debian's packages first if missing (we are root).

    ``nginx-light`` first, then ``nginx``; either must have TLS, HTTP/2 and the gRPC proxy.
    Installing does not start the system service here (policy-rc.d), and none is used.
    """
    binary = _nginx_binary()
    if binary is not None and _nginx_usable(binary):
        return binary
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise BenchError("no nginx with gRPC proxying on PATH, and no apt-get to install one")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for package in ("nginx-light", "nginx"):
        say(f"installing {package} with apt-get (nginx with gRPC proxying is not on PATH)")
        install = [apt_get, "install", "-y", "-q", package]
        done = subprocess.run(  # noqa: S603
            install, env=environment, capture_output=True, check=False
        )
        if done.returncode != 0:  # the package lists may be missing or stale
            update = [apt_get, "update", "-q"]
            subprocess.run(update, env=environment, capture_output=True, check=False)  # noqa: S603
            done = subprocess.run(  # noqa: S603
                install, env=environment, capture_output=True, check=False
            )
        binary = _nginx_binary()
        if done.returncode == 0 and binary is not None and _nginx_usable(binary):
            return binary
    raise BenchError("could not install an nginx with TLS, HTTP/2 and gRPC proxying")


def nginx_version(binary: str) -> str:
    """``1.22.1`` for nginx/1.22.1."""
    output = subprocess.run(  # noqa: S603
        [binary, "-v"], capture_output=True, text=True, check=False
    ).stderr
    found = re.search(r"nginx/([0-9.]+)", output)
    if found is None:
        raise BenchError(f"cannot read the nginx version from {output!r}")
    return found.group(1)


def start_nginx(binary: str, pki: DevPki, directory: Path, upstream: str, workers: str) -> Service:
    """Start nginx as an mTLS gRPC proxy (bench/nginx_grpc.conf.in) from ``directory``."""
    home = directory / "nginx"
    home.mkdir()
    port = free_port()
    version = tuple(int(part) for part in nginx_version(binary).split("."))
    listen = (
        f"listen 127.0.0.1:{port} ssl;\n        http2 on;"
        if version >= HTTP2_DIRECTIVE_SINCE
        else f"listen 127.0.0.1:{port} ssl http2;"
    )
    text = (BENCH / "nginx_grpc.conf.in").read_text(encoding="utf-8")
    for name, value in {
        "WORKERS": workers,
        "DIR": str(home),
        "PKI": str(pki.directory),
        "UPSTREAM": upstream,
        "LISTEN": listen,
    }.items():
        text = text.replace(f"@{name}@", value)
    config = home / "nginx.conf"
    config.write_text(text, encoding="utf-8")
    command = [binary, "-p", str(home), "-c", str(config), "-e", str(home / "error.log")]
    checked = subprocess.run(  # noqa: S603
        [*command, "-t"], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        raise BenchError(f"nginx rejects {config}: {checked.stderr.strip()}")
    return _spawn(
        "nginx",
        [*command, "-g", "daemon off;"],
        home / "stdout.log",
        f"127.0.0.1:{port}",
        with_children=True,
    )


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, /proc/stat), so far."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is also in user.
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS
