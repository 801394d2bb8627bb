//! Selectors: `type:value` facts about a node or a workload.

use std::fmt;

/// Longest selector accepted from any source, in bytes.
pub const MAX_SELECTOR_LEN: usize = 1024;

/// One `type:value` fact. The type never contains `:`; the value may.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Selector {
    pub kind: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectorError {
    #[error("selector {0:?} is not of the form type:value")]
    Form(String),
    #[error("selector is longer than {MAX_SELECTOR_LEN} bytes")]
    TooLong,
    #[error("selector {0:?} contains a control character")]
    Control(String),
}

impl Selector {
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Selector {
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// Parses `type:value`; the type is everything before the first `:`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(SelectorError::Control(s.to_string()));
        }
        match s.split_once(':') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok(Selector::new(k, v)),
            _ => Err(SelectorError::Form(s.to_string())),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl From<Selector> for tessera_proto::authority::Selector {
    fn from(s: Selector) -> Self {
        Self {
            r#type: s.kind,
            value: s.value,
        }
    }
}

impl From<&tessera_proto::authority::Selector> for Selector {
    fn from(s: &tessera_proto::authority::Selector) -> Self {
        Selector::new(s.r#type.clone(), s.value.clone())
    }
}

/// Why a set of selectors does not bound who gets the identity: it selects by `unix:path`
/// or `unix:sha256`, which name the file `/proc/<pid>/exe` points at (any process may
/// point that at a file it can execute: `PR_SET_MM_MAP` needs a capability only in its
/// own user namespace), and none of its selectors names who runs the process. `None`
/// otherwise.
pub fn file_only_warning(selectors: &[Selector]) -> Option<&'static str> {
    let names_a_file = |s: &Selector| s.kind == "unix" && matches!(field(s), "path" | "sha256");
    (selectors.iter().any(names_a_file) && !selectors.iter().any(names_a_principal)).then_some(
        "it selects by unix:path/unix:sha256, which name a file, not the code that runs \
         (any process can point its /proc/<pid>/exe at a file it may execute), and no \
         selector names who runs it; add unix:uid, unix:gid, a systemd unit or a container id",
    )
}

/// A selector a caller cannot choose for itself that separates principals: its uid or
/// groups, its systemd unit or cgroup, its container or pod. Not the slice, the runtime,
/// the QoS class, nor the image or labels (whoever runs containers chooses those).
fn names_a_principal(s: &Selector) -> bool {
    matches!(
        (s.kind.as_str(), field(s)),
        (
            "unix",
            "uid" | "user" | "gid" | "group" | "supplementary_gid"
        ) | ("systemd", "unit" | "invocation_id")
            | ("cgroup", "path")
            | ("container", "id")
            | ("k8s", "pod_uid")
    )
}

/// The field a selector's value starts with (`uid` of `unix:uid:0`).
fn field(s: &Selector) -> &str {
    s.value.split_once(':').map_or("", |(f, _)| f)
}

/// True when every selector in `required` is among `have` (an entry matches a workload).
pub fn all_present(required: &[Selector], have: &[Selector]) -> bool {
    !required.is_empty() && required.iter().all(|r| have.contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_value_with_colons() {
        let s = Selector::parse("cgroup:path:/system.slice/a.service").unwrap();
        assert_eq!(s.kind, "cgroup");
        assert_eq!(s.value, "path:/system.slice/a.service");
        assert_eq!(s.to_string(), "cgroup:path:/system.slice/a.service");
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            Selector::parse("nocolon"),
            Err(SelectorError::Form(_))
        ));
        assert!(matches!(Selector::parse(":v"), Err(SelectorError::Form(_))));
        assert!(matches!(Selector::parse("t:"), Err(SelectorError::Form(_))));
        assert!(matches!(
            Selector::parse("t:a\nb"),
            Err(SelectorError::Control(_))
        ));
        assert_eq!(
            Selector::parse(&"a:".repeat(600)),
            Err(SelectorError::TooLong)
        );
    }

    #[test]
    fn a_binary_without_a_principal_is_warned_about() {
        let s = |v: &[&str]| {
            v.iter()
                .map(|x| Selector::parse(x).unwrap())
                .collect::<Vec<_>>()
        };
        for weak in [
            &["unix:sha256:ab"][..],
            &["unix:path:/usr/bin/passwd"],
            &["unix:path:/bin/x", "unix:sha256:ab"],
            // Coarse: every system service, every docker container, a pod's QoS class.
            &["unix:path:/bin/x", "systemd:slice:system.slice"],
            &[
                "unix:sha256:ab",
                "container:runtime:docker",
                "k8s:qos:burstable",
            ],
            // Chosen by whoever runs the container.
            &[
                "unix:sha256:ab",
                "container:label:app:web",
                "container:image_id:sha256:cd",
            ],
        ] {
            assert!(file_only_warning(&s(weak)).is_some(), "{weak:?}");
        }
        for bounded in [
            &[][..],
            &["unix:uid:0"],
            &["systemd:slice:system.slice"],
            &["unix:sha256:ab", "unix:uid:1000"],
            &["unix:sha256:ab", "unix:gid:33"],
            &["unix:path:/bin/x", "systemd:unit:x.service"],
            &["unix:path:/bin/x", "container:id:ab"],
            &["unix:path:/bin/x", "k8s:pod_uid:ab"],
            &["unix:path:/bin/x", "cgroup:path:/system.slice/x.service"],
        ] {
            assert_eq!(file_only_warning(&s(bounded)), None, "{bounded:?}");
        }
    }

    #[test]
    fn matching_requires_all_and_nonempty() {
        let have = vec![
            Selector::new("unix", "uid:0"),
            Selector::new("unix", "gid:0"),
        ];
        assert!(all_present(&[Selector::new("unix", "uid:0")], &have));
        assert!(!all_present(
            &[
                Selector::new("unix", "uid:0"),
                Selector::new("unix", "uid:1")
            ],
            &have
        ));
        assert!(!all_present(&[], &have));
    }
}
