//! `systemd:unit|slice|scope|invocation_id:<v>` from the unit cgroups systemd names
//! (systemd.unit(5), systemd.slice(5), systemd.scope(5); "Control Group APIs and
//! Delegation", <https://systemd.io/CGROUP_DELEGATION/>).
//!
//! One value each, like `sd_pid_get_unit`/`sd_pid_get_user_unit`: the innermost unit and
//! slice. A user manager's units are named by their user, so they are qualified:
//! `systemd:unit:user@1000.service/app.service`. No system unit name contains `/`, so no
//! user can produce a value naming a system unit.

use super::cgroup_layout::{is_slice, is_unit, unescape, Layout};

/// `unit:`, `slice:` and `scope:` values.
pub(crate) fn selector_values(layout: &Layout<'_>) -> Vec<String> {
    let (qualifier, comps) = match &layout.user {
        Some((uid, user)) => (format!("user@{uid}.service/"), user.as_slice()),
        None => (String::new(), layout.system.as_slice()),
    };
    let mut out = Vec::new();
    let unit = comps.last().filter(|c| is_unit(c)).map(|c| unescape(c));
    if let Some(u) = unit {
        out.push(format!("unit:{qualifier}{u}"));
    }
    // The innermost slice; a user unit directly under the manager is in none of its own.
    let slice = match comps.iter().rev().find(|c| is_slice(c)) {
        Some(s) => Some(format!("{qualifier}{}", unescape(s))),
        None if layout.user.is_none() => None,
        None => layout
            .system
            .iter()
            .rev()
            .find(|c| is_slice(c))
            .map(|s| unescape(s).to_string()),
    };
    if let Some(s) = slice {
        out.push(format!("slice:{s}"));
    }
    if let Some(u) = unit.filter(|u| u.ends_with(".scope")) {
        out.push(format!("scope:{qualifier}{u}"));
    }
    out
}

/// The cgroup path of the system unit the process is in, whose `trusted.invocation_id`
/// names this run of it. `None` for a user unit: its manager runs as the user, keeps the id
/// in a `user.` xattr the user can rewrite, and cannot set `trusted.` ones.
pub(crate) fn system_unit_cgroup(layout: &Layout<'_>) -> Option<String> {
    if layout.user.is_some() || !layout.system.last().is_some_and(|c| is_unit(c)) {
        return None;
    }
    Some(format!("/{}", layout.system.join("/")))
}

/// Longest `trusted.invocation_id` value accepted.
pub(crate) const MAX_INVOCATION_ID: usize = 64;

/// The invocation ID as systemd prints it (32 lowercase hex digits): systemd stores it as
/// that text; 16 raw bytes are accepted too. Anything else is not an invocation ID.
pub(crate) fn invocation_id(raw: &[u8]) -> Option<String> {
    match raw.len() {
        32 if raw.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            String::from_utf8(raw.to_vec()).ok()
        }
        16 => Some(hex::encode(raw)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(path: &str) -> Vec<String> {
        selector_values(&Layout::parse(path).unwrap())
    }

    #[test]
    fn system_service_and_scopes() {
        assert_eq!(
            values("/system.slice/nginx.service"),
            ["unit:nginx.service", "slice:system.slice"]
        );
        // A Delegate=yes service's own sub-cgroups are still that unit.
        assert_eq!(
            values("/system.slice/app.service/worker/sub.service"),
            ["unit:app.service", "slice:system.slice"]
        );
        assert_eq!(
            values("/ci.slice/ci-jobs.slice/run-u42.scope"),
            [
                "unit:run-u42.scope",
                "slice:ci-jobs.slice",
                "scope:run-u42.scope"
            ]
        );
        assert_eq!(
            values("/user.slice/user-1000.slice/session-3.scope"),
            [
                "unit:session-3.scope",
                "slice:user-1000.slice",
                "scope:session-3.scope"
            ]
        );
        assert_eq!(
            values("/system.slice/system-getty.slice/getty@tty1.service"),
            ["unit:getty@tty1.service", "slice:system-getty.slice"]
        );
        assert_eq!(
            values("/init.scope"),
            ["unit:init.scope", "scope:init.scope"]
        );
        // systemd's cg_escape: a unit named `_x.service` lives in `__x.service`.
        assert_eq!(
            values("/system.slice/__x.service"),
            ["unit:_x.service", "slice:system.slice"]
        );
        assert_eq!(values("/system.slice"), ["slice:system.slice"]);
        assert!(values("/").is_empty());
    }

    #[test]
    fn user_units_are_qualified() {
        assert_eq!(
            values("/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo@x.service"),
            [
                "unit:user@1000.service/app-foo@x.service",
                "slice:user@1000.service/app.slice"
            ]
        );
        assert_eq!(
            values("/user.slice/user-1000.slice/user@1000.service/init.scope"),
            [
                "unit:user@1000.service/init.scope",
                "slice:user-1000.slice",
                "scope:user@1000.service/init.scope"
            ]
        );
        // A user naming its unit like a system one still gets only the qualified name.
        assert_eq!(
            values("/user.slice/user-1000.slice/user@1000.service/system.slice/sshd.service")[0],
            "unit:user@1000.service/sshd.service"
        );
    }

    #[test]
    fn invocation_id_cgroup() {
        let cg = |p| system_unit_cgroup(&Layout::parse(p).unwrap());
        assert_eq!(
            cg("/system.slice/a.service/sub").as_deref(),
            Some("/system.slice/a.service")
        );
        assert_eq!(cg("/system.slice").as_deref(), None);
        assert_eq!(
            cg("/user.slice/user-1000.slice/user@1000.service/app.slice/x.service"),
            None
        );
    }

    #[test]
    fn invocation_id_formats() {
        let text = b"5d6b1e0c2f3a4b5c6d7e8f9001122334";
        assert_eq!(
            invocation_id(text).as_deref(),
            Some("5d6b1e0c2f3a4b5c6d7e8f9001122334")
        );
        assert_eq!(
            invocation_id(&[0xab; 16]).as_deref(),
            Some("abababababababababababababababab")
        );
        assert_eq!(invocation_id(b"5D6B1E0C2F3A4B5C6D7E8F9001122334"), None);
        assert_eq!(invocation_id(b"5d6b1e0c2f3a4b5c6d7e8f900112233\n"), None);
        assert_eq!(invocation_id(b""), None);
        assert_eq!(invocation_id(&[0; 33]), None);
    }
}
