//! One HTTP/1.1 GET over a Unix socket, the body bounded in size. The caller bounds the time.

use std::path::Path;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
}

/// `GET path` on the daemon at `socket`; the 200 response's body, at most `max_body` bytes.
/// The connection is driven here (no spawned task), so dropping this future closes it.
pub(crate) async fn get(socket: &Path, path: &str, max_body: usize) -> Result<Bytes, ClientError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(ClientError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let request = hyper::Request::get(path)
        // The Docker and podman servers ignore the host; HTTP/1.1 requires one.
        .header(hyper::header::HOST, "docker")
        .body(Empty::<Bytes>::new())?;
    let exchange = async {
        let response = sender.send_request(request).await?;
        if response.status() != hyper::StatusCode::OK {
            return Err(ClientError::Status(response.status().as_u16()));
        }
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => ClientError::Http(*e),
                Err(_) => ClientError::TooLarge(max_body),
            })?;
        Ok(body.to_bytes())
    };
    let mut exchange = std::pin::pin!(exchange);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = &mut exchange => r,
        // The connection may finish first with the whole body already buffered.
        c = &mut conn => {
            c?;
            exchange.await
        }
    }
}
