"""`proto/` stays wire-compatible with every released contract (descriptor sets committed in
`proto/releases/` at each release): no message, field, method or enum value removed, renumbered,
retyped or renamed. Additions are free."""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
RELEASES = sorted((ROOT / "proto" / "releases").glob("*.binpb"))


def current_descriptors() -> descriptor_pb2.FileDescriptorSet:
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "current.binpb"
        code = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{well_known}",
                            f"--descriptor_set_out={out}",
                            str(ROOT / "proto" / "recsvc" / "v1" / "offers.proto")])
        assert code == 0, "protoc failed on proto/recsvc/v1/offers.proto"
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def breaking_changes(old: descriptor_pb2.FileDescriptorSet,
                     new: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """What ``new`` breaks of ``old``'s wire contract, one line each."""
    problems: list[str] = []
    new_files = {f.name: f for f in new.file}
    for old_file in old.file:
        new_file = new_files.get(old_file.name)
        if new_file is None:
            problems.append(f"{old_file.name}: file removed")
            continue
        messages = {m.name: m for m in new_file.message_type}
        for message in old_file.message_type:
            if message.name not in messages:
                problems.append(f"message {message.name} removed")
                continue
            fields = {f.number: f for f in messages[message.name].field}
            for field in message.field:
                now = fields.get(field.number)
                where = f"{message.name}.{field.name} = {field.number}"
                if now is None:
                    problems.append(f"{where}: field removed or renumbered")
                elif (now.type, now.type_name, now.label) != (field.type, field.type_name,
                                                              field.label):
                    problems.append(f"{where}: type or label changed")
                elif now.name != field.name:
                    problems.append(f"{where}: renamed to {now.name} (breaks JSON)")
        enums = {e.name: e for e in new_file.enum_type}
        for enum in old_file.enum_type:
            values = {v.number: v.name for v in enums[enum.name].value} \
                if enum.name in enums else {}
            for value in enum.value:
                if values.get(value.number) != value.name:
                    problems.append(f"enum {enum.name}.{value.name} = {value.number} removed "
                                    "or renamed")
        services = {s.name: s for s in new_file.service}
        for service in old_file.service:
            methods = {m.name: m for m in services[service.name].method} \
                if service.name in services else {}
            for method in service.method:
                now_method = methods.get(method.name)
                if now_method is None:
                    problems.append(f"rpc {service.name}.{method.name} removed")
                elif (now_method.input_type, now_method.output_type,
                      now_method.client_streaming, now_method.server_streaming) != (
                        method.input_type, method.output_type, method.client_streaming,
                        method.server_streaming):
                    problems.append(f"rpc {service.name}.{method.name}: signature changed")
    return problems


def test_there_is_a_released_contract_to_compare_with() -> None:
    assert RELEASES, "proto/releases/ holds no descriptor set"


@pytest.mark.parametrize("release", RELEASES, ids=lambda p: p.stem)
def test_proto_is_wire_compatible_with_release(release: Path) -> None:
    old = descriptor_pb2.FileDescriptorSet.FromString(release.read_bytes())
    assert breaking_changes(old, current_descriptors()) == []


def test_the_check_sees_a_renumbered_field_a_retyped_one_and_a_dropped_enum_value() -> None:
    new = current_descriptors()
    old = descriptor_pb2.FileDescriptorSet()
    old.CopyFrom(new)
    broken = new.file[-1]
    request = next(m for m in broken.message_type if m.name == "RecommendRequest")
    next(f for f in request.field if f.name == "limit").number = 99
    next(f for f in request.field if f.name == "channel").type = \
        descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    strategy = next(e for e in broken.enum_type if e.name == "Strategy")
    del strategy.value[-1]
    problems = breaking_changes(old, new)
    assert len(problems) == 3, problems
