//! Named boot policies (authority config): what a host must have booted to
//! earn `tpm:policy:<name>`.

use super::facts::BootFacts;
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BootPolicyConfig {
    pub name: String,
    #[serde(default)]
    pub require_secure_boot: bool,
    /// Allowed PCR 4 boot application digests (hex); every one booted must be listed.
    #[serde(default)]
    pub boot_digests: Vec<String>,
    /// Regular expressions; every measured kernel command line must match one,
    /// and there must be at least one.
    #[serde(default)]
    pub kernel_cmdline: Vec<String>,
    /// Golden values of quoted PCRs: index (decimal string) to hex.
    #[serde(default)]
    pub pcrs: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct BootPolicy {
    pub name: String,
    require_secure_boot: bool,
    boot_digests: Vec<String>,
    kernel_cmdline: Vec<Regex>,
    pcrs: BTreeMap<u32, Vec<u8>>,
}

impl BootPolicy {
    /// Checks the config; errors name the policy and the field.
    pub fn new(c: &BootPolicyConfig) -> Result<Self, String> {
        let at = |field: &str, e: String| format!("tpm.policy {:?}: {field}: {e}", c.name);
        if c.name.is_empty()
            || !c
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!(
                "tpm.policy name {:?}: use letters, digits, '-', '_' or '.'",
                c.name
            ));
        }
        let boot_digests = c
            .boot_digests
            .iter()
            .map(|d| {
                hex::decode(d)
                    .map(hex::encode)
                    .map_err(|e| at("boot_digests", format!("{d:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let kernel_cmdline = c
            .kernel_cmdline
            .iter()
            .map(|r| Regex::new(r).map_err(|e| at("kernel_cmdline", e.to_string())))
            .collect::<Result<_, _>>()?;
        let pcrs = c
            .pcrs
            .iter()
            .map(|(k, v)| {
                let idx = k
                    .parse::<u32>()
                    .ok()
                    .filter(|i| *i < 24)
                    .ok_or_else(|| at("pcrs", format!("{k:?} is not a PCR index")))?;
                let val = hex::decode(v).map_err(|e| at("pcrs", format!("{k}: {e}")))?;
                Ok((idx, val))
            })
            .collect::<Result<_, String>>()?;
        Ok(BootPolicy {
            name: c.name.clone(),
            require_secure_boot: c.require_secure_boot,
            boot_digests,
            kernel_cmdline,
            pcrs,
        })
    }

    /// The PCRs whose event-log events this policy reads, each with the
    /// requirement that reads it.
    fn log_pcrs(&self) -> Vec<(u32, &'static str)> {
        let mut out = Vec::new();
        if self.require_secure_boot {
            out.push((7, "require_secure_boot"));
        }
        if !self.boot_digests.is_empty() {
            out.push((4, "boot_digests"));
        }
        if !self.kernel_cmdline.is_empty() {
            // grub measures the command line into PCR 8, systemd-boot into 12.
            out.extend([(8, "kernel_cmdline"), (12, "kernel_cmdline")]);
        }
        out
    }

    /// Every PCR this policy reads, with the requirement that reads it:
    /// through the event log, or as a golden value (which needs no log: it
    /// is compared with the quoted value itself).
    pub fn reads(&self) -> Vec<(u32, &'static str)> {
        let mut out = self.log_pcrs();
        out.extend(self.pcrs.keys().map(|p| (*p, "pcrs")));
        out
    }

    /// Config check: every PCR this policy reads must be quoted.
    pub fn check_quoted(&self, quoted: &[u8]) -> Result<(), String> {
        match self
            .reads()
            .into_iter()
            .find(|(p, _)| !quoted.iter().any(|q| u32::from(*q) == *p))
        {
            Some((pcr, field)) => Err(format!(
                "tpm.policy {:?}: {field} reads PCR {pcr}, which tpm.pcrs does not quote",
                self.name
            )),
            None => Ok(()),
        }
    }

    /// Why the host fails this policy, or None if it satisfies it. Fails
    /// closed: a PCR the policy reads must be quoted, covered by the event
    /// log, and hold only allowed, proven events; list requirements hold
    /// for every entry and need at least one.
    pub fn violation(&self, facts: &BootFacts, quoted: &BTreeMap<u32, Vec<u8>>) -> Option<String> {
        for (pcr, field) in self.reads() {
            if !quoted.contains_key(&pcr) {
                return Some(format!("{field}: PCR {pcr} is not quoted"));
            }
        }
        for (pcr, field) in self.log_pcrs() {
            match facts.covered.get(&pcr) {
                None if facts.covered.is_empty() => return Some(format!("{field}: no event log")),
                None => return Some(format!("{field}: the event log does not cover PCR {pcr}")),
                Some(Err(why)) => return Some(format!("{field}: {why}")),
                Some(Ok(())) => {}
            }
        }
        if self.require_secure_boot && !facts.secure_boot {
            return Some("secure boot is not enabled".into());
        }
        if !self.boot_digests.is_empty() {
            if facts.boot_applications.is_empty() {
                return Some("no measured boot application".into());
            }
            if let Some(d) = facts
                .boot_applications
                .iter()
                .find(|d| !self.boot_digests.contains(d))
            {
                return Some(format!("boot application {d} is not allowed"));
            }
        }
        if !self.kernel_cmdline.is_empty() {
            if facts.kernel_cmdlines.is_empty() {
                return Some("no measured kernel command line".into());
            }
            if let Some(c) = facts
                .kernel_cmdlines
                .iter()
                .find(|c| !self.kernel_cmdline.iter().any(|r| r.is_match(c)))
            {
                return Some(format!("kernel command line {c:?} is not allowed"));
            }
        }
        for (idx, want) in &self.pcrs {
            if quoted.get(idx) != Some(want) {
                return Some(format!("PCR {idx} differs from the golden value"));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> BootFacts {
        BootFacts {
            secure_boot: true,
            boot_applications: vec!["aa".into(), "bb".into()],
            kernel_cmdlines: vec!["BOOT_IMAGE=/vmlinuz ro quiet".into()],
            covered: [4, 7, 8, 12].map(|p| (p, Ok(()))).into(),
        }
    }

    /// PCRs 0, 4, 7, 8 and 12 quoted.
    fn quoted() -> BTreeMap<u32, Vec<u8>> {
        [0, 4, 7, 8, 12].map(|p| (p, vec![1u8; 32])).into()
    }

    fn policy(f: impl FnOnce(&mut BootPolicyConfig)) -> BootPolicy {
        let mut c = BootPolicyConfig {
            name: "prod".into(),
            ..Default::default()
        };
        f(&mut c);
        BootPolicy::new(&c).unwrap()
    }

    #[test]
    fn each_requirement_is_enforced() {
        let quoted = quoted();
        assert_eq!(policy(|_| {}).violation(&facts(), &quoted), None);
        let sb = policy(|c| c.require_secure_boot = true);
        assert_eq!(sb.violation(&facts(), &quoted), None);
        assert!(sb
            .violation(
                &BootFacts {
                    secure_boot: false,
                    ..facts()
                },
                &quoted
            )
            .is_some());
        let apps = policy(|c| c.boot_digests = vec!["AA".into(), "bb".into()]);
        assert_eq!(apps.violation(&facts(), &quoted), None);
        let apps = policy(|c| c.boot_digests = vec!["aa".into()]);
        assert!(apps.violation(&facts(), &quoted).unwrap().contains("bb"));
        let cmd = policy(|c| c.kernel_cmdline = vec!["^BOOT_IMAGE=\\S+ ro quiet$".into()]);
        assert_eq!(cmd.violation(&facts(), &quoted), None);
        assert!(cmd
            .violation(
                &BootFacts {
                    kernel_cmdlines: vec!["ro init=/bin/sh".into()],
                    ..facts()
                },
                &quoted
            )
            .is_some());
        assert!(cmd
            .violation(
                &BootFacts {
                    kernel_cmdlines: vec![],
                    ..facts()
                },
                &quoted
            )
            .is_some());
        let golden = policy(|c| c.pcrs = BTreeMap::from([("0".into(), hex::encode([1u8; 32]))]));
        assert_eq!(golden.violation(&facts(), &quoted), None);
        assert!(golden
            .violation(&facts(), &BTreeMap::from([(0, vec![2u8; 32])]))
            .is_some());
        assert!(golden.violation(&facts(), &BTreeMap::new()).is_some());
        // Golden values are the quoted values themselves: no log needed.
        assert_eq!(golden.violation(&BootFacts::default(), &quoted), None);
    }

    /// Every requirement that reads the log, against a host that sends none,
    /// one whose log does not cover the PCR, one with an unproven event there,
    /// and a quote without the PCR.
    #[test]
    fn log_requirements_fail_closed() {
        type Requirement = (u32, fn(&mut BootPolicyConfig));
        let reqs: [Requirement; 4] = [
            (7, |c| c.require_secure_boot = true),
            (4, |c| c.boot_digests = vec!["aa".into(), "bb".into()]),
            (8, |c| c.kernel_cmdline = vec!["quiet".into()]),
            (12, |c| c.kernel_cmdline = vec!["quiet".into()]),
        ];
        for (pcr, f) in reqs {
            let p = policy(f);
            assert_eq!(p.violation(&facts(), &quoted()), None, "PCR {pcr}");
            let no_log = BootFacts {
                covered: BTreeMap::new(),
                ..facts()
            };
            assert!(p
                .violation(&no_log, &quoted())
                .unwrap()
                .contains("no event log"));
            let mut uncovered = facts();
            uncovered.covered.remove(&pcr);
            assert!(p
                .violation(&uncovered, &quoted())
                .unwrap()
                .contains(&format!("does not cover PCR {pcr}")));
            let mut unproven = facts();
            unproven
                .covered
                .insert(pcr, Err(format!("PCR {pcr}: event 9 (EV_IPL) forged")));
            assert!(p
                .violation(&unproven, &quoted())
                .unwrap()
                .contains("forged"));
            let mut unquoted = quoted();
            unquoted.remove(&pcr);
            assert!(p
                .violation(&facts(), &unquoted)
                .unwrap()
                .contains(&format!("PCR {pcr} is not quoted")));
        }
        // A list requirement needs at least one entry, and every one allowed.
        let apps = policy(|c| c.boot_digests = vec!["aa".into(), "bb".into()]);
        let none = BootFacts {
            boot_applications: vec![],
            ..facts()
        };
        assert!(apps.violation(&none, &quoted()).is_some());
        let cmd = policy(|c| c.kernel_cmdline = vec!["quiet$".into()]);
        let two = BootFacts {
            kernel_cmdlines: vec!["ro quiet".into(), "init=/bin/sh".into()],
            ..facts()
        };
        assert!(cmd
            .violation(&two, &quoted())
            .unwrap()
            .contains("init=/bin/sh"));
    }

    #[test]
    fn check_quoted_names_policy_requirement_and_pcr() {
        let p = policy(|c| c.boot_digests = vec!["aa".into()]);
        assert_eq!(
            p.check_quoted(&[0, 1, 2, 3, 5, 6, 7]).unwrap_err(),
            "tpm.policy \"prod\": boot_digests reads PCR 4, which tpm.pcrs does not quote"
        );
        assert_eq!(p.check_quoted(&[4]), Ok(()));
        let golden = policy(|c| c.pcrs = BTreeMap::from([("23".into(), "00".into())]));
        assert!(golden
            .check_quoted(&[0, 1, 2])
            .unwrap_err()
            .contains("pcrs reads PCR 23"));
    }

    #[test]
    fn bad_config_names_policy_and_field() {
        let bad = |f: fn(&mut BootPolicyConfig)| {
            let mut c = BootPolicyConfig {
                name: "p".into(),
                ..Default::default()
            };
            f(&mut c);
            BootPolicy::new(&c).unwrap_err()
        };
        assert!(bad(|c| c.kernel_cmdline = vec!["(".into()]).contains("kernel_cmdline"));
        assert!(bad(|c| c.boot_digests = vec!["zz".into()]).contains("boot_digests"));
        assert!(bad(|c| c.pcrs = BTreeMap::from([("24".into(), "00".into())])).contains("pcrs"));
        assert!(bad(|c| c.name = "a b".into()).contains("name"));
    }
}
