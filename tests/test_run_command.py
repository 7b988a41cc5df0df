"""`lienthong run`, which `make run` calls: the stack as a new user sees it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from dataplane_build import built_binary
from dev_config import write_dev_config

from gateway.compiled import BINARY_VARIABLE
from justice_adapter.registry import unit_of_code
from lienthong.demo import SAMPLES
from lienthong.reference import code_lists


def _read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """What the process printed until ``marker`` (or until it exited or time ran out)."""
    assert process.stdout is not None
    stream = process.stdout
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in stream:
            lines.append(line)
            if marker in line:
                seen.set()
        seen.set()  # end of output

    threading.Thread(target=read, daemon=True).start()
    seen.wait(timeout)
    return "".join(lines)


def test_run_starts_the_stack_prints_registrations_with_matching_pins_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    # The configuration `make run` uses, on free ports and in this test's directory.
    config = write_dev_config(tmp_path, tmp_path / "pki", {})
    environment = {**os.environ, BINARY_VARIABLE: str(built_binary())}
    with subprocess.Popen(
        [sys.executable, "-m", "lienthong.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        start_new_session=True,  # so that a failed test can stop the services too
    ) as process:
        try:
            output = _read_until(process, "press Ctrl-C", timeout=90)
            assert "press Ctrl-C" in output, output
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    rows = [line for line in output.splitlines() if re.match(r"^\d{3,5}-\d{4}-\d+ ", line)]
    assert len(rows) == len(SAMPLES)
    assert sum(line.rstrip().endswith(" yes") for line in rows) == 4
    assert not any(" NO" in line for line in rows)
    assert sum(" not_applicable " in line for line in rows) == 2
    gateway_log = (tmp_path / "log" / "gateway.jsonl").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in gateway_log]
    exchanges = [event for event in events if event["event"] == "exchange"]
    # An account for each sample unit, each registration, each PIN request, the statistics,
    # a reconciliation per province (with its read of the population side's digests) and the
    # audit checkpoint shown at the end.
    units = {sample.unit_code for sample in SAMPLES}
    codes = code_lists()
    provinces = {unit_of_code(codes, code).province_code for code in units}
    assert len(exchanges) == len(units) + len(SAMPLES) + 4 + 1 + 2 * len(provinces) + 1
    assert f"{len(SAMPLES)} registrations compared with 4 citizen records" in output
    assert "by salted digests: 0 findings." in output
    total = next(line for line in output.splitlines() if line.startswith("total "))
    assert total.split()[1:6] == [str(len(SAMPLES)), "4", "1", "1", "0"]
    assert {event["status"] for event in exchanges} == {"OK"}
    assert all(isinstance(event["leaf_index"], int) for event in exchanges)
    assert "— lienthong.local/audit " in output  # the signed checkpoint was shown
    verified = subprocess.run(
        [sys.executable, "-m", "lienthong.cli", "audit", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"OK: {2 * len(exchanges)} entries" in verified.stdout
