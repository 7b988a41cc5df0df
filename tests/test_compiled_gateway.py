"""`lienthong serve gateway`, as an operator runs it: the binary in the service's process,
and the forked control plane beside it that compiles the policy again when its file changes
and goes away with the gateway (issue 15)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from dataplane_build import built_binary
from dev_config import DEV_CONFIG, wait_serving, write_dev_config
from stack import tls_of
from waiting import eventually

from certs.pki import init_dev_pki
from gateway.compiled import BINARY_VARIABLE
from lienthong import metadata
from lienthong.config import load_config
from lienthong.gateway.v1 import audit_service_pb2, audit_service_pb2_grpc
from lienthong.tls import secure_channel

PORTAL_GRANT = 'caller = "spiffe://lienthong.local/moj/officer-portal"\nmethods = ["lienthong.gateway.v1.AuditService/*"]'  # noqa: E501 - as it stands in the file


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_policy_recompiles_on_change_and_the_control_plane_leaves_with_the_gateway(
    tmp_path: Path,
) -> None:
    pki = init_dev_pki(tmp_path / "pki")
    config = write_dev_config(tmp_path, pki.directory, {})
    policy = tmp_path / "policy.toml"
    policy.write_text((DEV_CONFIG.parent / "policy.toml").read_text(encoding="utf-8"))
    settings = load_config(config).gateway
    environment = {
        **os.environ,
        "LIENTHONG__GATEWAY__POLICY": str(policy),
        BINARY_VARIABLE: str(built_binary()),
    }
    log = (tmp_path / "gateway.jsonl").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "lienthong.cli", "serve", "gateway", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True,
    )  # fmt: skip
    portal = tls_of(pki, "officer-portal").read()
    try:
        assert wait_serving(settings.listen, portal, process, timeout=30) is None
        # The service's process is the binary itself, and its one child the control plane.
        command = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert Path(command[0].decode()).name == "lienthong-gateway"
        folder = Path(command[2].decode()).parent
        (control_plane,) = _children(process.pid)

        def status() -> grpc.StatusCode:
            with secure_channel(settings.listen, portal) as channel:
                stub = audit_service_pb2_grpc.AuditServiceStub(channel)
                try:
                    stub.GetLatestCheckpoint(
                        audit_service_pb2.GetLatestCheckpointRequest(),
                        timeout=10,
                        metadata=((metadata.PURPOSE, "audit"),),
                    )
                except grpc.RpcError as error:
                    return error.code()
            return grpc.StatusCode.OK

        assert status() == grpc.StatusCode.OK
        text = policy.read_text(encoding="utf-8")
        assert PORTAL_GRANT in text
        policy.write_text(
            text.replace(
                PORTAL_GRANT, PORTAL_GRANT.replace("Service/*", "Service/GetInclusionProof")
            )
        )
        assert eventually(lambda: status() == grpc.StatusCode.PERMISSION_DENIED)
        policy.write_text("[[grant]]\nnot a policy")  # kept out: the last good one stays
        time.sleep(1)
        assert status() == grpc.StatusCode.PERMISSION_DENIED

        process.send_signal(signal.SIGKILL)
        process.wait()
        assert eventually(lambda: not _alive(control_plane))
        assert not folder.exists()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
