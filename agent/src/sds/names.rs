//! SDS resource names: the `[sds]` config keys for the three well-known names
//! and how a requested name maps onto what the snapshot holds.

use serde::Deserialize;

/// `[sds]` as written in the config file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SdsRaw {
    default_svid_name: Option<String>,
    default_bundle_name: Option<String>,
    default_all_bundles_name: Option<String>,
}

/// The well-known resource names (SPIRE's agent uses the same defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsNames {
    /// The caller's default (first) X.509-SVID as a `tls_certificate`.
    pub default_svid: String,
    /// The agent's own trust domain bundle as a `validation_context`.
    pub default_bundle: String,
    /// Every bundle the agent has, in one `validation_context`.
    pub all_bundles: String,
}

impl Default for SdsNames {
    fn default() -> Self {
        SdsNames {
            default_svid: "default".into(),
            default_bundle: "ROOTCA".into(),
            all_bundles: "ALL".into(),
        }
    }
}

impl SdsRaw {
    pub fn parse(self) -> Result<SdsNames, String> {
        let d = SdsNames::default();
        let names = SdsNames {
            default_svid: self.default_svid_name.unwrap_or(d.default_svid),
            default_bundle: self.default_bundle_name.unwrap_or(d.default_bundle),
            all_bundles: self.default_all_bundles_name.unwrap_or(d.all_bundles),
        };
        let fields = [
            ("default_svid_name", &names.default_svid),
            ("default_bundle_name", &names.default_bundle),
            ("default_all_bundles_name", &names.all_bundles),
        ];
        for (i, (field, value)) in fields.iter().enumerate() {
            if value.trim().is_empty() {
                return Err(format!("sds.{field}: must not be empty"));
            }
            // SPIFFE IDs and trust domain IDs are resource names of their own.
            if value.starts_with("spiffe://") {
                return Err(format!(
                    "sds.{field}: {value:?} would hide a SPIFFE ID resource; pick a name without \"spiffe://\""
                ));
            }
            if let Some((other, _)) = fields[..i].iter().find(|(_, v)| v == value) {
                return Err(format!(
                    "sds.{field}: {value:?} is also sds.{other}; the names must differ"
                ));
            }
        }
        Ok(names)
    }
}

/// What one requested resource name stands for.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted<'a> {
    DefaultSvid,
    DefaultBundle,
    AllBundles,
    /// A trust domain ID, `spiffe://<td>`: that trust domain's bundle.
    Bundle(&'a str),
    /// Any other name: an X.509-SVID by SPIFFE ID (or nothing the caller has).
    Svid(&'a str),
}

impl SdsNames {
    pub fn classify<'a>(&self, name: &'a str) -> Wanted<'a> {
        if name == self.default_svid {
            Wanted::DefaultSvid
        } else if name == self.default_bundle {
            Wanted::DefaultBundle
        } else if name == self.all_bundles {
            Wanted::AllBundles
        } else if name
            .strip_prefix("spiffe://")
            .is_some_and(|td| !td.is_empty() && !td.contains('/'))
        {
            Wanted::Bundle(name)
        } else {
            Wanted::Svid(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<SdsNames, String> {
        tessera_common::config::from_toml::<SdsRaw>(toml_text)
            .unwrap()
            .parse()
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(parse("").unwrap(), SdsNames::default());
        let n =
            parse("default_svid_name = \"svid\"\ndefault_all_bundles_name = \"every\"").unwrap();
        assert_eq!(n.default_svid, "svid");
        assert_eq!(n.default_bundle, "ROOTCA");
        assert_eq!(n.all_bundles, "every");
    }

    #[test]
    fn bad_names_name_the_field() {
        let cases = [
            (
                "default_svid_name = \"\"",
                "sds.default_svid_name: must not be empty",
            ),
            (
                "default_bundle_name = \"  \"",
                "sds.default_bundle_name: must not be empty",
            ),
            (
                "default_all_bundles_name = \"ROOTCA\"",
                "sds.default_all_bundles_name: \"ROOTCA\" is also sds.default_bundle_name",
            ),
            (
                "default_bundle_name = \"default\"",
                "sds.default_bundle_name: \"default\" is also sds.default_svid_name",
            ),
            (
                "default_svid_name = \"spiffe://example.org\"",
                "sds.default_svid_name: \"spiffe://example.org\" would hide",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(want), "{text}: {e}");
        }
    }

    #[test]
    fn classify_names() {
        let n = SdsNames::default();
        assert_eq!(n.classify("default"), Wanted::DefaultSvid);
        assert_eq!(n.classify("ROOTCA"), Wanted::DefaultBundle);
        assert_eq!(n.classify("ALL"), Wanted::AllBundles);
        assert_eq!(n.classify("spiffe://td"), Wanted::Bundle("spiffe://td"));
        assert_eq!(n.classify("spiffe://td/a"), Wanted::Svid("spiffe://td/a"));
        assert_eq!(n.classify("spiffe://"), Wanted::Svid("spiffe://"));
        assert_eq!(n.classify("other"), Wanted::Svid("other"));
    }
}
