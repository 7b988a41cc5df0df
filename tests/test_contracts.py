"""The contracts: buf lint and format, breaking changes against the baseline, and generated
code that matches the .proto files."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
BUF = ROOT / "node_modules" / ".bin" / "buf"
BASELINE = PROTOS / "baseline" / "lienthong.binpb"
BREAKING = 100  # buf's exit code for a breaking change


def buf(*arguments: str, cwd: Path = PROTOS) -> subprocess.CompletedProcess[str]:
    if not BUF.exists():
        pytest.fail("buf is not installed: run `make test` (npm ci) first")
    return subprocess.run(
        [str(BUF), *arguments], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_buf_lint_passes_with_standard_and_comments_rules() -> None:
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_protos_are_buf_formatted() -> None:
    result = buf("format", "--diff", "--exit-code")
    assert result.returncode == 0, result.stdout


def test_no_breaking_change_against_the_baseline() -> None:
    result = buf("breaking", "--against", str(BASELINE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_breaking_check_catches_a_removed_field(tmp_path: Path) -> None:
    """Guards the guard: a wire-breaking edit of a copy of the protos must fail."""
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy)
    proto = copy / "lienthong" / "population" / "v1" / "citizen_service.proto"
    text = proto.read_text(encoding="utf-8")
    removed = "  bool newly_issued = 2;\n"
    edited = text.replace(removed, "")
    assert edited != text
    proto.write_text(edited, encoding="utf-8")
    result = buf("breaking", "--against", str(BASELINE), cwd=copy)
    assert result.returncode == BREAKING, result.stdout + result.stderr
    assert "newly_issued" in result.stdout


def _generated(root: Path) -> dict[Path, Path]:
    """Every generated file under ``root``: the lienthong/<package>/v1 trees and their parents'
    __init__.py."""
    files: dict[Path, Path] = {}
    for version in root.glob("lienthong/*/v1"):
        for path in [*version.glob("*.py*"), version.parent / "__init__.py"]:
            files[path.relative_to(root)] = path
    return files


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    """Regenerating from protos/ reproduces the committed code exactly, file for file."""
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "generate_contracts.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    fresh, committed = _generated(tmp_path), _generated(ROOT)
    assert sorted(fresh) == sorted(committed), "generated files added or removed: regenerate"
    drifted = [
        str(name)
        for name, path in fresh.items()
        if not filecmp.cmp(path, committed[name], shallow=False)
    ]
    assert drifted == [], f"regenerate with `make contracts`: {drifted}"
