"""Gateway vs nginx vs direct: one load generator, one upstream, three paths (issue 7).

Usage: .venv/bin/python bench/proxy_bench.py [--seconds 15] [--concurrency 32] [--no-docs]

In one run, against the same upstream (bench/proxy_upstream.py, a raw-bytes echo of
``CitizenService/VerifyCitizen`` over mTLS, its own process) and with the same load generator
(bench/proxy_load.py, grpc.aio in ``--load-processes`` processes, presenting the civil-status
registry's certificate):

1. direct: the generator calls the upstream itself over mTLS;
2. gateway: through ``lienthong serve gateway`` (its own process) with its full durable
   audit log (SQLite, WAL, synchronous=FULL, in a temporary directory), the development
   policy, CRL, metrics and JSON exchange log;
3. nginx: through nginx (Debian's package, installed if missing; its own instance from a
   temporary directory, bench/nginx_grpc.conf.in) as an mTLS gRPC proxy, no audit.

For each: calls per second at saturation (``--concurrency`` unary calls always in flight for
``--seconds`` seconds, after ``--warmup`` seconds), p50 and p99 latency, and the CPU time per
call of the proxy, the upstream and the generator (user + system, from /proc/<pid>/stat);
then p50 and p99 latency at a paced load of ``--paced-fraction`` (10 %) of the gateway's
saturated rate, the same rate for all three. Everything shares the machine's cores: before
each phase the bench waits (up to ``--quiet-wait`` seconds) for other work to stop, and the
CPU the rest of the machine used meanwhile (other processes, and kernel work charged to none)
is shown beside the figures. The tables are printed and, unless ``--no-docs``, written into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from proxy_procs import (
    BENCH,
    REPO,
    BenchError,
    Service,
    build_dataplane,
    cpu_seconds,
    ensure_nginx,
    gateway_config,
    machine_busy_seconds,
    nginx_version,
    start_gateway,
    start_nginx,
    start_upstream,
    verify_audit,
    wait_ready,
)

from certs.pki import init_dev_pki

DOCS = REPO / "docs" / "benchmarks.md"
HEADING = "## Gateway vs nginx vs direct (issue 7)"
BEGIN_MARK = "<!-- proxy_bench: figures begin -->"
END_MARK = "<!-- proxy_bench: figures end -->"
THROUGHPUT_TARGET = 0.8  # gateway calls/s at least this fraction of nginx's
ADDED_P50_TARGET_MS = 1.0  # at most this much p50 added over direct at 10 % load
SETUPS = ("direct", "gateway", "nginx")
DEFAULT_SECONDS = 15.0
DEFAULT_CONCURRENCY = 32
DOCS_WIDTH = 92
BUSY_MACHINE_CORES = 0.25  # before a phase, wait while the machine is busier than this


@dataclass(frozen=True)
class Settings:
    """How hard and how long each setup is loaded."""

    concurrency: int
    load_processes: int
    warmup: float
    seconds: float
    paced_seconds: float
    paced_fraction: float
    quiet_wait: float


@dataclass(frozen=True)
class Target:
    """Where the generator calls, and whose CPU time counts as which role's."""

    address: str
    roles: dict[str, Callable[[], list[int]]]


@dataclass(frozen=True)
class Phase:
    """What one load phase measured."""

    calls_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_call: dict[str, float]  # by role: proxy, upstream, generator
    cores: dict[str, float]  # CPU seconds per second, by role, and "rest" of the machine


@dataclass(frozen=True)
class Result:
    """Both phases of one setup."""

    saturated: Phase
    paced: Phase
    paced_rate: float


def _percentile(ordered: list[int], fraction: float) -> float:
    """Nearest-rank percentile of sorted microseconds, in milliseconds."""
    if not ordered:
        return float("nan")
    rank = min(len(ordered), max(1, math.ceil(len(ordered) * fraction)))
    return ordered[rank - 1] / 1000


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def _start_generators(
    settings: Settings, pki_directory: Path, work: Path, target: Target, rate: float | None
) -> list[tuple[subprocess.Popen[str], Path]]:
    processes = 1 if rate else settings.load_processes
    shares = [settings.concurrency // processes] * processes
    for index in range(settings.concurrency % processes):
        shares[index] += 1
    generators = []
    for index, share in enumerate(shares):
        out = work / f"load-{time.monotonic_ns()}-{index}.json"
        load = ["--rate", str(rate / processes)] if rate else ["--concurrency", str(share)]
        command = [
            sys.executable, str(BENCH / "proxy_load.py"), "--target", target.address,
            "--pki", str(pki_directory), "--out", str(out), *load,
            "--warmup", str(settings.warmup),
            "--seconds", str(settings.paced_seconds if rate else settings.seconds),
        ]  # fmt: skip
        generator = subprocess.Popen(  # noqa: S603 - our own load generator
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        generators.append((generator, out))
    return generators


def wait_for_quiet(settings: Settings) -> float:
    """Wait up to ``settings.quiet_wait`` seconds for the machine to be nearly idle.

    Other work on the machine takes CPU from every process measured here, so before each
    phase this waits, a second at a time, until the machine used less than
    ``BUSY_MACHINE_CORES`` over the last second (our idle services included). Returns the
    cores busy over the last second waited.
    """
    deadline = time.monotonic() + settings.quiet_wait
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0)
        busy = machine_busy_seconds() - before
        if busy < BUSY_MACHINE_CORES or time.monotonic() >= deadline:
            return busy


def run_phase(
    settings: Settings,
    pki_directory: Path,
    work: Path,
    target: Target,
    rate: float | None = None,
) -> Phase:
    """Load ``target`` closed-loop (or open-loop at ``rate`` calls/s) and measure it."""
    busy = wait_for_quiet(settings)
    if busy >= BUSY_MACHINE_CORES:
        print(f"  other work keeps {busy:.2f} cores busy: the figures will suffer", flush=True)
    generators = _start_generators(settings, pki_directory, work, target, rate)
    for generator, _ in generators:
        if generator.stdout is None or generator.stdout.readline().strip() != "ready":
            raise BenchError(f"the load generator could not call {target.address}")
    start_at = time.time() + 0.3
    for generator, _ in generators:
        if generator.stdin is not None:
            generator.stdin.write(f"{start_at}\n")
            generator.stdin.close()
    seconds = settings.paced_seconds if rate else settings.seconds
    roles: dict[str, Callable[[], list[int]]] = {
        **target.roles,
        "generator": lambda: [process.pid for process, _ in generators],
    }
    _sleep_until(start_at + settings.warmup)
    before = {role: cpu_seconds(pids()) for role, pids in roles.items()}
    busy_before = machine_busy_seconds()
    _sleep_until(start_at + settings.warmup + seconds)
    used = {role: cpu_seconds(pids()) - before[role] for role, pids in roles.items()}
    # Kernel work charged to no process (some of the loopback traffic's) is in it too.
    rest = max(0.0, machine_busy_seconds() - busy_before - sum(used.values()))
    latencies: list[int] = []
    errors = 0
    for generator, out in generators:
        if generator.wait(timeout=60) != 0:
            raise BenchError(f"a load generator for {target.address} failed")
        result = json.loads(out.read_text(encoding="utf-8"))
        latencies.extend(result["latencies_us"])
        errors += sum(result["errors"].values())
    latencies.sort()
    calls = max(len(latencies), 1)
    return Phase(
        calls_per_second=len(latencies) / seconds,
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        errors=errors,
        cpu_ms_per_call={role: 1000 * cpu / calls for role, cpu in used.items()},
        cores={role: cpu / seconds for role, cpu in {**used, "rest": rest}.items()},
    )


def measure(
    settings: Settings,
    context: tuple[Path, Path],
    name: str,
    target: Target,
    paced_rate: float | None,
) -> Result:
    """Both phases of one setup; without ``paced_rate``, pace at a fraction of its own rate."""
    pki_directory, work = context
    print(f"{name}: {settings.concurrency} calls in flight for {settings.seconds:g} s", flush=True)
    saturated = run_phase(settings, pki_directory, work, target)
    rate = paced_rate or settings.paced_fraction * saturated.calls_per_second
    print(f"{name}: paced at {rate:.0f} calls/s for {settings.paced_seconds:g} s", flush=True)
    paced = run_phase(settings, pki_directory, work, target, rate)
    return Result(saturated, paced, rate)


def machine(nginx: str) -> dict[str, str]:
    """What the figures were measured on, and when."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{memory_kib / 1024 / 1024:.0f} GiB",
        "kernel": f"Linux {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "sqlite": sqlite3.sqlite_version,
        "nginx": nginx,
    }


def _ms(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def tables(settings: Settings, results: dict[str, Result]) -> list[str]:
    """The two Markdown tables and the verdict on each target."""
    paced_rate = results["gateway"].paced_rate
    lines = [
        (
            f"Saturation: {settings.concurrency} unary calls always in flight, "
            f"{settings.seconds:g} s measured after {settings.warmup:g} s of warm-up. CPU: "
            "user + system time per call answered, and in cores (CPU seconds a second); "
            "*rest* is what the rest of the machine used meanwhile."
        ),
        "",
        (
            "| setup | calls/s | p50 ms | p99 ms | errors | proxy CPU ms/call | proxy cores "
            "| upstream CPU ms/call | generator CPU ms/call | rest cores |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in SETUPS:
        phase = results[name].saturated
        lines.append(
            f"| {name} | {phase.calls_per_second:,.0f} | {phase.p50_ms:.2f} | {phase.p99_ms:.2f} "
            f"| {phase.errors} | {_ms(phase.cpu_ms_per_call.get('proxy'))} "
            f"| {_ms(phase.cores.get('proxy'), 2)} "
            f"| {phase.cpu_ms_per_call['upstream']:.3f} "
            f"| {phase.cpu_ms_per_call['generator']:.3f} | {phase.cores['rest']:.2f} |"
        )
    direct_p50 = results["direct"].paced.p50_ms
    lines += [
        "",
        (
            f"Paced: {paced_rate:.0f} calls/s sent on schedule ({settings.paced_fraction:.0%} "
            f"of the gateway's saturated rate) for {settings.paced_seconds:g} s, to each setup."
        ),
        "",
        (
            "| setup | calls/s | p50 ms | p99 ms | errors | added p50 ms | proxy CPU ms/call "
            "| rest cores |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in SETUPS:
        phase = results[name].paced
        added = "-" if name == "direct" else f"{phase.p50_ms - direct_p50:+.2f}"
        lines.append(
            f"| {name} | {phase.calls_per_second:,.0f} | {phase.p50_ms:.2f} | {phase.p99_ms:.2f} "
            f"| {phase.errors} | {added} | {_ms(phase.cpu_ms_per_call.get('proxy'))} "
            f"| {phase.cores['rest']:.2f} |"
        )
    gateway, nginx = results["gateway"], results["nginx"]
    ratio = gateway.saturated.calls_per_second / nginx.saturated.calls_per_second
    added_p50 = gateway.paced.p50_ms - direct_p50
    cpu_ratio = (
        gateway.saturated.cpu_ms_per_call["proxy"] / nginx.saturated.cpu_ms_per_call["proxy"]
    )
    lines += [
        "",
        (
            f"- Throughput, gateway / nginx: {ratio:.2f} (target at least "
            f"{THROUGHPUT_TARGET}): **{'met' if ratio >= THROUGHPUT_TARGET else 'not met'}**."
        ),
        (
            f"- p50 added by the gateway at {settings.paced_fraction:.0%} load: "
            f"{added_p50:.2f} ms (target at most {ADDED_P50_TARGET_MS:g} ms): "
            f"**{'met' if added_p50 <= ADDED_P50_TARGET_MS else 'not met'}**."
        ),
        f"- Proxy CPU per call at saturation, gateway / nginx: {cpu_ratio:.1f}.",
    ]
    return lines


def wrap(lines: list[str], width: int = DOCS_WIDTH) -> list[str]:
    """Markdown paragraphs and list items wrapped as the docs are; tables and code kept."""
    wrapped = []
    for line in lines:
        if line.startswith(("|", "```", "<!--")) or len(line) <= width:
            wrapped.append(line)
        else:
            indent = "  " if line.startswith("- ") else ""
            wrapped.append(textwrap.fill(line, width, subsequent_indent=indent))
    return wrapped


def section(command: str, settings: Settings, facts: dict[str, str], notes: list[str]) -> str:
    """The generated part of the docs section, between its markers."""
    return "\n".join(wrap([
        BEGIN_MARK,
        "```sh",
        (
            f"{command:<48} # by default --seconds {DEFAULT_SECONDS:g} "
            f"--concurrency {DEFAULT_CONCURRENCY}"
        ),
        "```",
        "",
        (
            f"Measured {facts['date']} on {facts['nproc']} cores ({facts['cpu']}), "
            f"{facts['memory']}, {facts['kernel']}; Python {facts['python']}, grpcio "
            f"{facts['grpcio']}, SQLite {facts['sqlite']}, nginx {facts['nginx']}; the gateway: "
            "lienthong-gateway, release build. The load "
            f"generator ({settings.load_processes} processes), the upstream and the proxy "
            "all share these cores. One run; rerun the command to reproduce."
        ),
        "",
        *notes,
        END_MARK,
    ]))  # fmt: skip


def write_docs(generated: str) -> None:
    """Put ``generated`` between the markers, or append the section with it."""
    text = DOCS.read_text(encoding="utf-8")
    if BEGIN_MARK in text and END_MARK in text:
        head, rest = text.split(BEGIN_MARK, 1)
        text = head + generated + rest.split(END_MARK, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{generated}\n"
    DOCS.write_text(text, encoding="utf-8")


def run(settings: Settings, nginx_binary: str, nginx_workers: str) -> tuple[dict[str, Result], str]:
    """Measure the gateway (whose rate sets the paced rate), direct, then nginx.

    Returns the results and the last line of ``lienthong audit verify`` on the gateway's log.
    """
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="proxy_bench-") as temporary:
        work = Path(temporary)
        pki = init_dev_pki(work / "pki")
        context = (pki.directory, work)
        upstream = start_upstream(pki, work)
        running: list[Service] = [upstream]
        try:
            wait_ready(pki, upstream)
            config, listen = gateway_config(
                pki,
                work,
                upstream.address,
                max_concurrent=max(64, settings.concurrency),
            )
            print("gateway: building lienthong-gateway (release)", flush=True)
            gateway = start_gateway(config, listen, work, build_dataplane())
            running.append(gateway)
            wait_ready(pki, gateway)
            roles = {"upstream": upstream.pids, "proxy": gateway.pids}
            results["gateway"] = measure(settings, context, "gateway", Target(listen, roles), None)
            paced_rate = results["gateway"].paced_rate
            gateway.stop()
            running.remove(gateway)
            print("gateway: verifying its audit log", flush=True)
            audit = verify_audit(config)
            print(f"gateway: audit log {audit}", flush=True)
            direct = Target(upstream.address, {"upstream": upstream.pids})
            results["direct"] = measure(settings, context, "direct", direct, paced_rate)
            nginx = start_nginx(nginx_binary, pki, work, upstream.address, nginx_workers)
            running.append(nginx)
            wait_ready(pki, nginx)
            roles = {"upstream": upstream.pids, "proxy": nginx.pids}
            target = Target(nginx.address, roles)
            results["nginx"] = measure(settings, context, "nginx", target, paced_rate)
        finally:
            for service in reversed(running):
                service.stop()
    return results, audit


def main() -> None:
    """Run the three setups, print the tables, write them into the docs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="saturated phase")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="paced phase")
    parser.add_argument("--paced-fraction", type=float, default=0.1, help="of gateway's rate")
    parser.add_argument("--load-processes", type=int, default=2, help="generator processes")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=15.0,
        help="before each phase, wait up to this many seconds for other work to stop",
    )
    parser.add_argument("--nginx-workers", default="auto", help="nginx worker_processes")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    arguments = parser.parse_args()
    if arguments.concurrency < arguments.load_processes:
        parser.error("--concurrency must be at least --load-processes")
    settings = Settings(
        concurrency=arguments.concurrency,
        load_processes=arguments.load_processes,
        warmup=arguments.warmup,
        seconds=arguments.seconds,
        paced_seconds=arguments.paced_seconds,
        paced_fraction=arguments.paced_fraction,
        quiet_wait=arguments.quiet_wait,
    )
    command = " ".join([".venv/bin/python bench/proxy_bench.py", *sys.argv[1:]])
    started = time.monotonic()
    try:
        nginx_binary = ensure_nginx(lambda text: print(text, flush=True))
        facts = machine(nginx_version(nginx_binary))
        print(", ".join(f"{key} {value}" for key, value in facts.items()), flush=True)
        results, audit = run(settings, nginx_binary, arguments.nginx_workers)
    except BenchError as error:
        sys.exit(f"proxy_bench: {error}")
    notes = [
        *tables(settings, results),
        "",
        f"The gateway's audit log after its phases (`lienthong audit verify`): {audit}.",
    ]
    print("\n" + "\n".join(notes))
    print(f"\n{time.monotonic() - started:.0f} s in all")
    if not arguments.no_docs:
        write_docs(section(command, settings, facts, notes))
        print(f"\nwritten to {DOCS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
