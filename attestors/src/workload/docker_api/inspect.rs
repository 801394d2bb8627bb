//! `GET /containers/<id>/json` (Docker Engine API, also served by podman) to selectors:
//! `image_id:sha256:<hex>` and `label:<key>:<value>`, bounded and checked.

use std::collections::BTreeMap;

use serde::Deserialize;
use tessera_common::Selector;

/// Labels kept per container (the first by key); more can only match fewer entries.
pub(crate) const MAX_LABELS: usize = 64;
pub(crate) const MAX_LABEL_KEY: usize = 128;
pub(crate) const MAX_LABEL_VALUE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub(crate) enum InspectError {
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("answered for container {got:?}, not the one asked")]
    WrongId { got: String },
}

#[derive(Deserialize)]
struct Inspect {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Image", default)]
    image: Option<String>,
    #[serde(rename = "Config", default)]
    config: Option<Config>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

/// The selectors the daemon's answer adds for container `id` (which the kernel named; an
/// answer about any other container is rejected whole).
pub(crate) fn selectors(id: &str, body: &[u8]) -> Result<Vec<Selector>, InspectError> {
    let doc: Inspect = serde_json::from_slice(body)?;
    if doc.id != id {
        return Err(InspectError::WrongId { got: doc.id });
    }
    let mut out = Vec::new();
    match doc.image.as_deref().map(image_id) {
        Some(Some(hex)) => out.push(Selector::new("container", format!("image_id:sha256:{hex}"))),
        Some(None) => tracing::debug!(id, image = ?doc.image, "image is not a sha256 ID; left out"),
        None => {}
    }
    let labels = doc.config.and_then(|c| c.labels).unwrap_or_default();
    if labels.len() > MAX_LABELS {
        tracing::debug!(
            id,
            count = labels.len(),
            kept = MAX_LABELS,
            "too many labels"
        );
    }
    for (k, v) in labels.iter().take(MAX_LABELS) {
        if label_key_ok(k) && label_value_ok(v) {
            out.push(Selector::new("container", format!("label:{k}:{v}")));
        } else {
            tracing::debug!(id, key = ?k, "label is not safe selector text; left out");
        }
    }
    Ok(out)
}

/// The hex of `sha256:<64 hex>` (docker) or a bare 64-hex image ID.
fn image_id(image: &str) -> Option<&str> {
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// Reverse-DNS style keys; no `:`, so `label:<k>:<v>` splits one way only.
fn label_key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_LABEL_KEY
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
}

/// Printable ASCII: no control characters, nothing that renders like something else.
fn label_value_ok(v: &str) -> bool {
    v.len() <= MAX_LABEL_VALUE && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1b5c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";
    const IMG: &str = "97f9925bd6dae39e11b46fd9310d7de37751983badb6182666b7fedc32ec9b8f";

    fn strings(body: serde_json::Value) -> Vec<String> {
        selectors(ID, body.to_string().as_bytes())
            .unwrap()
            .iter()
            .map(Selector::to_string)
            .collect()
    }

    #[test]
    fn image_and_labels() {
        let got = strings(serde_json::json!({
            "Id": ID, "Image": format!("sha256:{IMG}"),
            "Config": {"Labels": {"app": "web", "com.example/tier": "a:b c", "": "x"}},
        }));
        assert_eq!(
            got,
            [
                format!("container:image_id:sha256:{IMG}"),
                "container:label:app:web".to_string(),
                "container:label:com.example/tier:a:b c".to_string(),
            ]
        );
        assert_eq!(
            strings(serde_json::json!({"Id": ID, "Image": IMG, "Config": {"Labels": null}})),
            [format!("container:image_id:sha256:{IMG}")]
        );
    }

    #[test]
    fn unsafe_labels_and_images_are_left_out() {
        let long_key = "k".repeat(MAX_LABEL_KEY + 1);
        let long_value = "v".repeat(MAX_LABEL_VALUE + 1);
        let got = strings(serde_json::json!({
            "Id": ID, "Image": "busybox:latest",
            "Config": {"Labels": {
                "a:b": "c", "nl": "x\ny", "uni": "caf\u{e9}", long_key: "v", "long": long_value,
                "ok": "",
            }},
        }));
        assert_eq!(got, ["container:label:ok:".to_string()]);
    }

    #[test]
    fn label_count_is_bounded() {
        let labels: BTreeMap<String, String> = (0..MAX_LABELS + 50)
            .map(|i| (format!("k{i:04}"), "v".to_string()))
            .collect();
        let got = strings(serde_json::json!({"Id": ID, "Config": {"Labels": labels}}));
        assert_eq!(got.len(), MAX_LABELS);
        assert_eq!(got[0], "container:label:k0000:v");
    }

    #[test]
    fn wrong_id_and_garbage_are_rejected() {
        let other = "0".repeat(64);
        let body = serde_json::json!({"Id": other, "Config": {"Labels": {"a": "b"}}});
        assert!(matches!(
            selectors(ID, body.to_string().as_bytes()),
            Err(InspectError::WrongId { .. })
        ));
        // A prefix of the id is what `docker inspect` accepts; the answer must be exact.
        let body = serde_json::json!({"Id": &ID[..12]});
        assert!(selectors(ID, body.to_string().as_bytes()).is_err());
        for bad in [&b"{"[..], b"[]", b"{\"Image\":\"x\"}", b"\xff"] {
            assert!(matches!(selectors(ID, bad), Err(InspectError::Json(_))));
        }
    }
}
