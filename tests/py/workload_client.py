"""A Workload API client written with py-spiffe (PyPI `spiffe`), driven by
tests/tests/e2e/py_spiffe.rs. The endpoint comes from SPIFFE_ENDPOINT_SOCKET,
as for any workload.

Commands (each prints JSON lines on stdout; the Rust test asserts on them):
  x509          X.509 context, bundles and X509Source
  jwt AUDIENCE  JWT-SVID fetch, validation (agent and offline), JWT bundles, JwtSource
  watch N       the first N X.509 context updates of a stream
A py-spiffe error prints {"error": class, "message": text} and exits 3.
"""

import base64
import json
import queue
import sys

from cryptography.hazmat.primitives import serialization
from spiffe import JwtSource, JwtSvid, WorkloadApiClient, X509Source
from spiffe.errors import PySpiffeError

TIMEOUT = 15.0


def emit(obj):
    print(json.dumps(obj, sort_keys=True), flush=True)


def b64(data):
    return base64.b64encode(data).decode()


def der(cert):
    return b64(cert.public_bytes(serialization.Encoding.DER))


def spki(public_key):
    return b64(public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def svid_facts(svid):
    return {
        "spiffe_id": str(svid.spiffe_id),
        "chain": [der(c) for c in svid.cert_chain],
        "leaf_key": spki(svid.leaf.public_key()),
        "private_key_public": spki(svid.private_key.public_key()),
    }


def x509_bundles(bundle_set):
    return {str(b.trust_domain): sorted(der(c) for c in b.x509_authorities)
            for b in bundle_set.bundles}


def cmd_x509():
    with WorkloadApiClient(default_timeout=TIMEOUT) as client:
        ctx = client.fetch_x509_context()
        bundles = client.fetch_x509_bundles()
        default = client.fetch_x509_svid()
    source = X509Source(timeout_in_seconds=TIMEOUT)
    try:
        source_id = str(source.svid.spiffe_id)
    finally:
        source.close()
    emit({
        "svids": [svid_facts(s) for s in ctx.x509_svids],
        "default_id": str(default.spiffe_id),
        "context_bundles": x509_bundles(ctx.x509_bundle_set),
        "bundles": x509_bundles(bundles),
        "source_id": source_id,
    })


def error_text(fn):
    """The py-spiffe error `fn` raises, or None when it does not."""
    try:
        fn()
    except PySpiffeError as e:
        return "%s: %s" % (type(e).__name__, e)
    return None


def cmd_jwt(audience):
    with WorkloadApiClient(default_timeout=TIMEOUT) as client:
        svid = client.fetch_jwt_svid({audience})
        token = svid.token
        by_agent = client.validate_jwt_svid(token, audience)
        bundle_set = client.fetch_jwt_bundles()
        td = svid.spiffe_id.trust_domain
        bundle = bundle_set.get_bundle_for_trust_domain(td)
        offline = JwtSvid.parse_and_validate(token, bundle, {audience})
        wrong_by_agent = error_text(lambda: client.validate_jwt_svid(token, audience + "-other"))
    wrong_offline = error_text(
        lambda: JwtSvid.parse_and_validate(token, bundle, {audience + "-other"}))
    source = JwtSource(timeout_in_seconds=TIMEOUT)
    try:
        source_svid = source.fetch_svid({audience})
        source_offline = JwtSvid.parse_and_validate(
            source_svid.token, source.get_bundle_for_trust_domain(td), {audience})
    finally:
        source.close()
    emit({
        "token": token,
        "spiffe_id": str(svid.spiffe_id),
        "audience": sorted(svid.audience),
        "validated_by_agent": str(by_agent.spiffe_id),
        "validated_offline": str(offline.spiffe_id),
        "wrong_audience_by_agent": wrong_by_agent,
        "wrong_audience_offline": wrong_offline,
        "jwt_bundles": {str(b.trust_domain): sorted(b.jwt_authorities)
                        for b in bundle_set.bundles},
        "source_id": str(source_offline.spiffe_id),
    })


def cmd_watch(count):
    updates = queue.Queue()
    with WorkloadApiClient() as client:
        handle = client.stream_x509_contexts(
            on_success=lambda ctx: updates.put(("ok", ctx)),
            on_error=lambda err: updates.put(("error", err)),
            retry_connect=False,
        )
        try:
            for _ in range(count):
                kind, value = updates.get(timeout=60)
                if kind == "error":
                    raise value
                emit({"ids": sorted(str(s.spiffe_id) for s in value.x509_svids)})
        finally:
            handle.cancel()


def main(argv):
    cmd, args = argv[1], argv[2:]
    try:
        if cmd == "x509" and not args:
            cmd_x509()
        elif cmd == "jwt" and len(args) == 1:
            cmd_jwt(args[0])
        elif cmd == "watch" and len(args) == 1:
            cmd_watch(int(args[0]))
        else:
            sys.exit("usage: workload_client.py x509 | jwt AUDIENCE | watch N")
    except PySpiffeError as e:
        emit({"error": type(e).__name__, "message": str(e)})
        sys.exit(3)


if __name__ == "__main__":
    main(sys.argv)
