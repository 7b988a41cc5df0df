"""Generate the Python code of the contracts in protos/ into the lienthong package.

Run with the project's virtual environment: ``python tools/generate_contracts.py``.
``--out DIR`` writes elsewhere, which the drift test uses to compare with what is committed.
The generated modules are never edited by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def proto_files() -> list[Path]:
    """Every .proto file of the project, in a stable order."""
    return sorted(PROTOS.rglob("*.proto"))


def generate(out: Path) -> None:
    """Write *_pb2.py, *_pb2_grpc.py and their .pyi stubs under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = [str(path.relative_to(PROTOS)) for path in proto_files()]
    well_known = Path(protoc.__file__).parent / "_proto"
    # mypy-protobuf's plugins live beside the interpreter, which need not be on PATH.
    bin_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--proto_path={PROTOS}",
        f"--proto_path={well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for path in proto_files():
        package_dir = out / path.relative_to(PROTOS).parent
        # Every level needs an __init__.py so that mypy and setuptools see regular packages.
        for directory in [package_dir, *package_dir.parents]:
            if directory == out or out not in directory.parents:
                continue
            if directory.name != "lienthong":
                (directory / "__init__.py").write_text(
                    '"""Generated from protos/: do not edit."""\n'
                )


def main() -> None:
    """Parse the command line and generate."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: repo)")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
