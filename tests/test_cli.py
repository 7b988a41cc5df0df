"""Every command of the `lienthong` command line explains itself."""

from __future__ import annotations

import pytest

from lienthong.cli import main

COMMANDS = [
    ["certs"], ["certs", "rotate"], ["policy", "check"], ["audit", "verify"], ["audit", "tail"],
    ["audit", "search"], ["audit", "export"], ["serve"], ["run"], ["demo"], ["statistics"],
    ["replay"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`lienthong … --help` prints a usage and exits 0."""
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])

    assert exited.value.code == 0
    assert "usage:" in capsys.readouterr().out
