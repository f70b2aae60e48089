"""The Functions host <-> worker protocol (tests/protos/*.proto), compiled at test time with grpcio-tools."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

PROTOS = Path(__file__).parent / "protos"


def compile_protocol(out: Path) -> Path:
    """Python modules for the protocol's messages and its gRPC service, written to ``out``."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/duration.proto
    sources = sorted(str(path.relative_to(PROTOS)) for path in PROTOS.rglob("*.proto"))
    arguments = ["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main([*arguments, *sources]) != 0:
        raise RuntimeError(f"protoc could not compile {sources}")
    return out


def load_protocol(compiled: Path) -> tuple[SimpleNamespace, Any]:
    """(every message type by name, the FunctionRpc service module), from ``compiled``.

    The worker library takes the message types as one namespace (its ``protos`` property), the
    way the worker's own front end hands them over.
    """
    if str(compiled) not in sys.path:
        sys.path.insert(0, str(compiled))
    modules = [
        importlib.import_module(name)
        for name in ("identity.ClaimsIdentityRpc_pb2", "shared.NullableTypes_pb2", "FunctionRpc_pb2")
    ]
    messages = {name: getattr(module, name) for module in modules for name in dir(module) if name[0].isupper()}
    return SimpleNamespace(**messages), importlib.import_module("FunctionRpc_pb2_grpc")
