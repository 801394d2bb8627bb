//! Who named each part of a cgroup path, and so which parts selectors may be derived from.
//!
//! Only root can create cgroups outside a delegated subtree. systemd delegates two kinds of
//! subtree: a unit with `Delegate=yes` (the cgroups under it belong to the unit, and to its
//! `User=` if it has one) and `user@<uid>.service`, the user manager, whose whole subtree is
//! owned by `<uid>`. Container runtimes delegate a container's own cgroup to the container.
//! So the path is read from the root to the first unit or container cgroup (the *system*
//! part: root named all of it), then, only under `user@<uid>.service`, on to the first unit
//! of the user manager (the *user* part: uid `<uid>` named it, and can name it anything).
//! Whatever lies deeper is never read.

use super::container;

/// systemd's limit on a unit name (`UNIT_NAME_MAX` less the NUL), and so on a component.
pub(crate) const MAX_NAME: usize = 255;

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Layout<'a> {
    /// Components only root could have created, outermost first, ending at the first unit
    /// or container cgroup.
    pub system: Vec<&'a str>,
    /// Under `user@<uid>.service`: the uid, and the components below it up to the first unit.
    pub user: Option<(u32, Vec<&'a str>)>,
}

impl<'a> Layout<'a> {
    /// `None` for a path that is not absolute and canonical or has a component no systemd
    /// unit or container runtime would create (such a path yields no derived selectors).
    pub fn parse(path: &'a str) -> Option<Layout<'a>> {
        let rest = path.strip_prefix('/')?;
        let comps: Vec<&str> = match rest {
            "" => Vec::new(),
            r => r.split('/').collect(),
        };
        if !comps.iter().all(|c| valid_component(c)) {
            return None;
        }
        let mut iter = comps.into_iter();
        let mut system = Vec::new();
        for c in iter.by_ref() {
            system.push(c);
            if is_unit(c) || container::cgroupfs(&system).is_some() {
                break;
            }
        }
        let user = match system.last().and_then(|c| user_manager_uid(c)) {
            Some(uid) => {
                let mut user = Vec::new();
                for c in iter {
                    user.push(c);
                    if is_unit(c) {
                        break;
                    }
                }
                Some((uid, user))
            }
            None => None,
        };
        Some(Layout { system, user })
    }
}

/// The characters systemd allows in unit names (`VALID_CHARS` plus `@`), which also covers
/// every runtime's container and pod cgroup names. Excludes `..`, newlines and the like.
fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_NAME
        && c != "."
        && c != ".."
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
}

/// The unit name a cgroup component stands for: systemd prefixes `_` to names that could
/// clash with cgroupfs files (`cg_escape`), so one leading `_` is dropped.
pub(crate) fn unescape(c: &str) -> &str {
    c.strip_prefix('_').unwrap_or(c)
}

/// Service and scope units hold processes and may be delegated; slices can be neither.
pub(crate) fn is_unit(c: &str) -> bool {
    let n = unescape(c);
    n.ends_with(".service") || n.ends_with(".scope")
}

pub(crate) fn is_slice(c: &str) -> bool {
    unescape(c).ends_with(".slice")
}

/// `user@<uid>.service`: the per-user systemd instance.
pub(crate) fn user_manager_uid(c: &str) -> Option<u32> {
    let digits = unescape(c)
        .strip_prefix("user@")?
        .strip_suffix(".service")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_the_first_unit() {
        let l = Layout::parse("/system.slice/foo.service/payload/evil.service").unwrap();
        assert_eq!(l.system, ["system.slice", "foo.service"]);
        assert_eq!(l.user, None);
    }

    #[test]
    fn user_manager_subtree_is_separate() {
        let l = Layout::parse(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/a.service/deeper.scope",
        )
        .unwrap();
        assert_eq!(
            l.system,
            ["user.slice", "user-1000.slice", "user@1000.service"]
        );
        assert_eq!(l.user, Some((1000, vec!["app.slice", "a.service"])));
    }

    #[test]
    fn root_and_hostile_paths() {
        assert_eq!(
            Layout::parse("/").unwrap(),
            Layout {
                system: vec![],
                user: None
            }
        );
        for bad in [
            "",
            "system.slice/a.service",
            "//a.service",
            "/system.slice/",
            "/../../system.slice/a.service",
            "/system.slice/./a.service",
            "/system.slice/a b.service",
            "/system.slice/a\n0::/system.slice/b.service",
            "/system.slice/caf\u{e9}.service",
        ] {
            assert_eq!(Layout::parse(bad), None, "{bad:?}");
        }
        let long = format!("/system.slice/{}.service", "a".repeat(MAX_NAME));
        assert_eq!(Layout::parse(&long), None);
        let max = format!("/system.slice/{}.service", "a".repeat(MAX_NAME - 8));
        assert!(Layout::parse(&max).is_some());
    }

    #[test]
    fn user_manager_names() {
        assert_eq!(user_manager_uid("user@0.service"), Some(0));
        assert_eq!(user_manager_uid("user@1000.service"), Some(1000));
        assert_eq!(user_manager_uid("user@.service"), None);
        assert_eq!(user_manager_uid("user@1x.service"), None);
        assert_eq!(user_manager_uid("user@99999999999.service"), None);
        assert_eq!(user_manager_uid("user-1000.slice"), None);
    }
}
