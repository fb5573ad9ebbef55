"""Generate the Python gRPC code from facepose.proto (committed; tests check it is current).

    python -m service.grpc.generate [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO = Path("service/grpc/facepose.proto")
REPO_ROOT = Path(__file__).resolve().parents[2]


def generate(out: Path) -> list[Path]:
    """Run protoc from the repository root so imports read `from service.grpc import ...`."""
    include = resources.files("grpc_tools") / "_proto"
    status = protoc.main([
        "grpc_tools.protoc", f"-I{REPO_ROOT}", f"-I{include}",
        f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
        str(REPO_ROOT / PROTO),
    ])
    if status != 0:
        raise RuntimeError(f"protoc failed with {status}")
    stem = out / PROTO.parent / PROTO.stem
    return [stem.with_name(f"{PROTO.stem}{suffix}")
            for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO_ROOT)
    generate(parser.parse_args().out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
