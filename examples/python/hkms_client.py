#!/usr/bin/env python3
"""An hkms client written as another team would write one: Python, grpcio, and no .proto files.

It learns the API from the node's server reflection, then runs a ministry officer's flow:
a card-master key generated under dual control (one officer opens the ceremony, a second
approves it), a sub-key derived for a province, the keys listed page by page. Every mutating
call is sent twice with the same request id, as a client does after a lost answer: the node
acts once and answers the retry with the first answer. Then it checks that each error it
provokes carries its machine-readable reason (google.rpc.ErrorInfo) and, for a bad field,
which field (google.rpc.BadRequest): a policy refusal, a missing ceremony, a wrong key state,
an unknown key, a bad field, a reused request id, an undecodable body, an unknown method and
a call without a client certificate.

Run by tests/python_client.rs against a real node; see docs/api.md. Exits 0 when every check
holds, 1 otherwise.

    python hkms_client.py --target 127.0.0.1:50051 --ca ca.pem \
        --officer officer.pem officer.key --second-officer officer2.pem officer2.key \
        --auditor auditor.pem auditor.key
"""

import argparse
import re
import sys
import uuid

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status

KEY_ID = re.compile(r"k-[0-9a-f]{32}")


class Api:
    """Stubs made at run time from the node's reflection service."""

    def __init__(self, channel):
        self.channel = channel
        self.pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))

    def message(self, full_name, **fields):
        cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))
        return cls(**fields)

    def method(self, service, name):
        svc = self.pool.FindServiceByName(f"hkms.v1.{service}")
        m = svc.FindMethodByName(name)
        req = message_factory.GetMessageClass(m.input_type)
        resp = message_factory.GetMessageClass(m.output_type)
        call = self.channel.unary_unary(
            f"/{svc.full_name}/{m.name}",
            request_serializer=req.SerializeToString,
            response_deserializer=resp.FromString,
        )
        return req, call

    def call(self, service, name, **fields):
        req, call = self.method(service, name)
        return call(req(**fields), timeout=30)

    def enum(self, full_name, value_name):
        return self.pool.FindEnumTypeByName(full_name).values_by_name[value_name].number


def connect(target, ca, cert, key):
    creds = grpc.ssl_channel_credentials(
        root_certificates=open(ca, "rb").read(),
        private_key=open(key, "rb").read(),
        certificate_chain=open(cert, "rb").read(),
    )
    return grpc.secure_channel(target, creds)


failures = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)


def twice(api, service, name, **fields):
    """A mutating call sent twice with one request id: the node must act once."""
    rid = uuid.uuid4().hex
    first = api.call(service, name, request_id=rid, **fields)
    again = api.call(service, name, request_id=rid, **fields)
    check(f"{name}: a retry with the same request id gets the first answer", first == again)
    return first


def reason_of(err):
    """The ErrorInfo reason and BadRequest fields of a failed call."""
    status = rpc_status.from_call(err)
    reason, fields = None, []
    if status is None:
        return reason, fields
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [v.field for v in bad.field_violations]
    return reason, fields


def expect_error(what, code, reason, fn, field=None):
    try:
        fn()
    except grpc.RpcError as err:
        got_reason, fields = reason_of(err)
        check(f"{what}: {code.name}", err.code() == code, f"got {err.code().name}")
        check(f"{what}: reason {reason}", got_reason == reason, f"got {got_reason}")
        if field is not None:
            check(f"{what}: names field {field}", field in fields, f"got {fields}")
        return
    check(f"{what}: refused", False, "the call succeeded")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--officer", nargs=2, required=True, metavar=("CERT", "KEY"))
    p.add_argument("--second-officer", nargs=2, required=True, metavar=("CERT", "KEY"))
    p.add_argument("--auditor", nargs=2, required=True, metavar=("CERT", "KEY"))
    a = p.parse_args()

    officer = Api(connect(a.target, a.ca, *a.officer))
    second = Api(connect(a.target, a.ca, *a.second_officer))
    auditor = Api(connect(a.target, a.ca, *a.auditor))
    generate = officer.enum("hkms.v1.Operation", "OPERATION_GENERATE")

    # A card-master key under dual control: open, approve (each sent twice).
    opened = twice(
        officer,
        "CeremonyService",
        "OpenCeremony",
        operation=generate,
        params={"key_type": "card-master"},
    )
    ceremony = opened.ceremony if hasattr(opened, "ceremony") else opened
    done = twice(second, "CeremonyService", "ApproveCeremony", id=ceremony.id)
    done = done.ceremony if hasattr(done, "ceremony") else done
    found = KEY_ID.search(str(done))
    check("the approved ceremony made a key", found is not None, str(done))
    if found is None:
        return 1
    master = found.group(0)

    # Sub-keys for two provinces, each derive sent twice.
    subkeys = [
        twice(officer, "KeyService", "DeriveSubKey", parent_id=master, region=region).key.id
        for region in ["440000", "450000", "320000"]
    ]

    # Every key, one per page: none twice, none missing.
    seen, token, pages = [], "", 0
    while True:
        page = officer.call("KeyService", "ListKeys", page_size=1, page_token=token)
        seen += [k.id for k in page.keys]
        pages += 1
        token = page.next_page_token
        if not token or pages > 50:
            break
    check("ListKeys pages through every key once", len(seen) == len(set(seen)) == 4, str(seen))
    check("ListKeys took more than one page", pages >= 4, str(pages))

    # Errors a program tells apart without reading English.
    expect_error(
        "an auditor generating a key",
        grpc.StatusCode.PERMISSION_DENIED,
        "POLICY_DENIED",
        lambda: auditor.call("KeyService", "GenerateKey", key_type="card-master"),
    )
    expect_error(
        "a card-master generated without a ceremony",
        grpc.StatusCode.FAILED_PRECONDITION,
        "CEREMONY_REQUIRED",
        lambda: officer.call("KeyService", "GenerateKey", key_type="card-master"),
    )
    expect_error(
        "an unknown key",
        grpc.StatusCode.NOT_FOUND,
        "KEY_NOT_FOUND",
        lambda: officer.call("KeyService", "GetKey", id="k-" + "0" * 32),
    )
    expect_error(
        "a region that is not six digits",
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
        lambda: officer.call("KeyService", "DeriveSubKey", parent_id=master, region="44"),
        field="region",
    )
    rid = uuid.uuid4().hex
    officer.call("KeyService", "DeriveSubKey", parent_id=master, region="330000", request_id=rid)
    expect_error(
        "a request id reused with another body",
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_TAKEN",
        lambda: officer.call(
            "KeyService", "DeriveSubKey", parent_id=master, region="340000", request_id=rid
        ),
    )

    retired = officer.enum("hkms.v1.KeyState", "KEY_STATE_RETIRED")
    suspended = officer.enum("hkms.v1.KeyState", "KEY_STATE_SUSPENDED")
    expect_error(
        "a state change from a state the key is not in",
        grpc.StatusCode.FAILED_PRECONDITION,
        "WRONG_KEY_STATE",
        lambda: officer.call(
            "KeyService",
            "ChangeKeyState",
            id=subkeys[0],
            state=suspended,
            expected_state=retired,
            request_id=uuid.uuid4().hex,
        ),
    )
    raw = officer.channel.unary_unary(
        "/hkms.v1.KeyService/GenerateKey",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    expect_error(
        "a body that is not the method's message",
        grpc.StatusCode.INVALID_ARGUMENT,
        "MALFORMED_BODY",
        lambda: raw(b"\xff\xff\xff", timeout=30),
    )
    nope = officer.channel.unary_unary(
        "/hkms.v1.KeyService/Nope",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    expect_error(
        "an unknown method",
        grpc.StatusCode.UNIMPLEMENTED,
        "UNKNOWN_METHOD",
        lambda: nope(b"", timeout=30),
    )
    try:
        nope(b"", timeout=30)
    except grpc.RpcError as err:
        check("an unknown method's message names it", "Nope" in (err.details() or ""), err.details())
    anonymous = grpc.secure_channel(
        a.target, grpc.ssl_channel_credentials(root_certificates=open(a.ca, "rb").read())
    )
    list_keys = Api(officer.channel).method("KeyService", "ListKeys")
    expect_error(
        "a call without a client certificate",
        grpc.StatusCode.UNAUTHENTICATED,
        "CLIENT_CERTIFICATE_MISSING",
        lambda: anonymous.unary_unary(
            "/hkms.v1.KeyService/ListKeys",
            request_serializer=list_keys[0].SerializeToString,
            response_deserializer=list_keys[0].FromString,
        )(list_keys[0](), timeout=30),
    )

    print(f"{len(failures)} check(s) failed" if failures else "every check held")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
