"""One process of the load generator of bench/proxy_bench.py (grpc.aio, unary calls).

Usage (bench/proxy_bench.py starts it; by hand only to debug):
    .venv/bin/python bench/proxy_load.py --target 127.0.0.1:PORT --pki DIR --out FILE
        (--concurrency N | --rate R) --warmup S --seconds S

It opens one mTLS channel presenting the civil-status registry's certificate (``justice``),
makes one call to check the path works, prints ``ready`` and waits for a line on standard
input holding the wall-clock start time, so that every process of a run starts together.
From then on it calls ``CitizenService/VerifyCitizen`` with a fixed payload and the metadata
the gateway's policy asks for, either closed-loop (``--concurrency`` calls always in flight,
each caller sending its next call when the previous one answered: saturation) or open-loop
(``--rate`` calls a second sent on schedule, whatever is still in flight: paced load). The
first ``--warmup`` seconds are not counted; then every call that completes within the next
``--seconds`` seconds is, and its latency (from sending to the answer) is kept. The result
is written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import grpc

METHOD = "/lienthong.population.v1.CitizenService/VerifyCitizen"
PURPOSE = ("lienthong-purpose", "identity-verification")
CALL_TIMEOUT = 10.0


class _Window:
    """The measuring window on the perf_counter clock, and what completed inside it."""

    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()

    def record(self, sent: float, answered: float, code: grpc.StatusCode) -> None:
        if not self.start <= answered <= self.end:
            return
        if code is grpc.StatusCode.OK:
            self.latencies.append(answered - sent)
        else:
            self.errors[code.name] += 1


async def _call(
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes], payload: bytes, request_id: str
) -> grpc.StatusCode:
    try:
        await call(
            payload,
            timeout=CALL_TIMEOUT,
            metadata=(PURPOSE, ("lienthong-request-id", request_id)),
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _closed_loop(
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
    payload: bytes,
    concurrency: int,
    window: _Window,
    begin: float,
) -> None:
    prefix = f"load-{os.getpid()}"

    async def caller(index: int) -> None:
        sequence = 0
        await asyncio.sleep(max(0.0, begin - time.perf_counter()))
        while (sent := time.perf_counter()) < window.end:
            sequence += 1
            code = await _call(call, payload, f"{prefix}-{index}-{sequence}")
            window.record(sent, time.perf_counter(), code)

    await asyncio.gather(*(caller(index) for index in range(concurrency)))


async def _open_loop(
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
    payload: bytes,
    rate: float,
    window: _Window,
    begin: float,
) -> None:
    prefix = f"paced-{os.getpid()}"
    interval = 1.0 / rate
    in_flight: set[asyncio.Task[None]] = set()

    async def one(sequence: int) -> None:
        sent = time.perf_counter()
        code = await _call(call, payload, f"{prefix}-{sequence}")
        window.record(sent, time.perf_counter(), code)

    sequence = 0
    while (due := begin + sequence * interval) < window.end:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        task = asyncio.create_task(one(sequence))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        sequence += 1
    await asyncio.gather(*in_flight)


async def run(arguments: argparse.Namespace) -> dict[str, object]:
    """Connect, synchronise with the other processes, load the target, return the result."""
    pki: Path = arguments.pki
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "justice.key").read_bytes(),
        certificate_chain=(pki / "justice.pem").read_bytes(),
    )
    payload = bytes(range(256)) * (arguments.payload_bytes // 256 + 1)
    payload = payload[: arguments.payload_bytes]
    async with grpc.aio.secure_channel(
        arguments.target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    ) as channel:
        call = channel.unary_unary(METHOD, None, None)
        code = await _call(call, payload, f"check-{os.getpid()}")
        if code is not grpc.StatusCode.OK:
            raise SystemExit(f"proxy_load: check call to {arguments.target} failed: {code.name}")
        print("ready", flush=True)
        start_at = float(sys.stdin.readline())  # wall-clock seconds, the same for every process
        begin = time.perf_counter() + (start_at - time.time())
        window = _Window(begin + arguments.warmup, begin + arguments.warmup + arguments.seconds)
        if arguments.rate:
            await _open_loop(call, payload, arguments.rate, window, begin)
        else:
            await _closed_loop(call, payload, arguments.concurrency, window, begin)
    return {
        "completed": len(window.latencies),
        "errors": dict(window.errors),
        "latencies_us": [round(latency * 1e6) for latency in window.latencies],
    }


def main() -> None:
    """Parse the arguments, run, write the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port to call")
    parser.add_argument("--pki", type=Path, required=True, help="the development PKI directory")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--concurrency", type=int, help="calls in flight (closed loop)")
    load.add_argument("--rate", type=float, help="calls a second (open loop)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds not counted")
    parser.add_argument("--seconds", type=float, required=True, help="seconds measured")
    parser.add_argument("--payload-bytes", type=int, default=256, help="request size")
    arguments = parser.parse_args()
    result = asyncio.run(run(arguments))
    arguments.out.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
