//! "Every client": whatever HTTP/2 `:authority` a client sends on the Unix socket
//! (gRPC C-core and grpc-java send the socket's path, grpc-swift the path
//! percent-encoded, grpc-go `localhost`), and both `unix:` endpoint URI forms.
//!
//! No HTTP/2 library lets a client send an authority that is not one, so the
//! call is spoken in raw frames here (RFC 9113 framing, RFC 7541 literals).

use crate::harness::*;
use prost::Message as _;
use std::path::Path;
use tessera_proto::workload as pb;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = len[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// An HPACK string length: integer with a 7-bit prefix, Huffman bit clear (RFC 7541 §5.1).
fn hpack_len(out: &mut Vec<u8>, mut n: usize) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A header block of "literal header field without indexing, new name" entries (§6.2.2).
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        hpack_len(&mut out, name.len());
        out.extend(name.as_bytes());
        hpack_len(&mut out, value.len());
        out.extend(value.as_bytes());
    }
    out
}

fn reason(code: &[u8]) -> String {
    let code = u32::from_be_bytes(code[..4].try_into().unwrap());
    match code {
        0x1 => "PROTOCOL_ERROR".into(),
        other => format!("error code {other:#x}"),
    }
}

/// One unary-request gRPC call on stream 1 of a new connection, with exactly the
/// header fields given. Returns the first response message, or how the stream ended.
async fn raw_call(socket: &Path, fields: &[(&str, &str)]) -> Result<Vec<u8>, String> {
    let mut s = UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS, 1, &header_block(fields)));
    // An empty protobuf message, gRPC-framed: uncompressed, length 0.
    out.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 0]));
    s.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head)
            .await
            .map_err(|e| format!("connection closed: {e}"))?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
        let mut payload = vec![0; len];
        s.read_exact(&mut payload)
            .await
            .map_err(|e| format!("connection closed: {e}"))?;
        match kind {
            SETTINGS if flags & ACK == 0 => s
                .write_all(&frame(SETTINGS, ACK, 0, &[]))
                .await
                .map_err(|e| e.to_string())?,
            RST_STREAM if stream == 1 => return Err(format!("RST_STREAM({})", reason(&payload))),
            GOAWAY => return Err(format!("GOAWAY({})", reason(&payload[4..]))),
            HEADERS if stream == 1 && flags & END_STREAM != 0 => {
                return Err("the call ended without a message (a gRPC error)".into())
            }
            DATA if stream == 1 => {
                body.extend(payload);
                if body.len() >= 5 {
                    let n = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
                    if body.len() >= 5 + n {
                        return Ok(body[5..5 + n].to_vec());
                    }
                }
            }
            _ => {}
        }
    }
}

/// FetchX509SVID with `authority` as the `:authority` field (absent when `None`).
async fn fetch_x509_with_authority(
    socket: &Path,
    authority: Option<&str>,
) -> Result<pb::X509svidResponse, String> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
    ];
    fields.extend(authority.map(|a| (":authority", a)));
    fields.extend([
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        (SECURITY_HEADER, "true"),
    ]);
    let msg = within(secs(20), "a raw HTTP/2 call", raw_call(socket, &fields)).await?;
    pb::X509svidResponse::decode(msg.as_slice()).map_err(|e| format!("not an answer: {e}"))
}

#[tokio::test]
async fn workload_api_answers_whatever_authority_a_client_sends() {
    let (d, id) = Deployment::up("interop/authority")
        .await
        .expect("start a deployment");
    wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&id]).await;
    let path = d.socket_path().display().to_string();
    let encoded = path.replace('/', "%2F");
    let cases = [
        (
            "the socket path (gRPC C-core, grpc-java)",
            Some(path.as_str()),
        ),
        (
            "the path percent-encoded (grpc-swift)",
            Some(encoded.as_str()),
        ),
        ("localhost (grpc-go)", Some("localhost")),
        ("empty", Some("")),
        ("none", None),
    ];
    let mut failures = Vec::new();
    for (what, authority) in cases {
        match fetch_x509_with_authority(&d.socket_path(), authority).await {
            Ok(resp) if ids(&resp) == [id.as_str()] => {}
            Ok(resp) => failures.push(format!("{what}: SVIDs for {:?}", ids(&resp))),
            Err(e) => failures.push(format!("{what} ({authority:?}): {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "the Workload API refused a client for its :authority:\n  {}",
        failures.join("\n  ")
    );
}

/// The h2 patch is narrow: CONNECT, whose authority is its target, still needs a valid one.
#[tokio::test]
async fn connect_with_a_path_authority_is_still_malformed() {
    let (d, id) = Deployment::up("interop/connect")
        .await
        .expect("start a deployment");
    wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&id]).await;
    let path = d.socket_path().display().to_string();
    let fields = [(":method", "CONNECT"), (":authority", path.as_str())];
    let res = within(secs(20), "CONNECT", raw_call(&d.socket_path(), &fields)).await;
    assert_eq!(res, Err("RST_STREAM(PROTOCOL_ERROR)".to_string()));
}

/// `unix:///path` and `unix:/path` wherever the agent's CLI reads an endpoint.
#[tokio::test]
async fn endpoint_uris_in_both_unix_forms() {
    let (d, id) = Deployment::up("interop/endpoint-forms")
        .await
        .expect("start a deployment");
    wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&id]).await;
    let agent = bin("tessera-agent").expect("binary built");
    let path = d.socket_path().display().to_string();
    for uri in [format!("unix://{path}"), format!("unix:{path}")] {
        let env = [("SPIFFE_ENDPOINT_SOCKET", uri.as_str())];
        let out = run_cmd(&agent, &["api", "fetch", "x509"], None, &env)
            .await
            .expect("run a command");
        assert!(
            out.success() && out.stdout.contains(&id),
            "api fetch x509 with SPIFFE_ENDPOINT_SOCKET={uri}: {out:?}"
        );
        let out = run_cmd(&agent, &["healthcheck"], None, &env)
            .await
            .expect("run a command");
        assert!(
            out.success(),
            "healthcheck with SPIFFE_ENDPOINT_SOCKET={uri}: {out:?}"
        );
        let out = run_cmd(&agent, &["healthcheck", "--socket", &uri], None, &[])
            .await
            .expect("run a command");
        assert!(out.success(), "healthcheck --socket {uri}: {out:?}");
    }
}
