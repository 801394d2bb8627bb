//! The Grafana dashboard the packages ship (packaging/grafana/tessera.json):
//! it has the shape Grafana imports, and every metric its queries name is one
//! the daemons export, scraped live from a running authority and agent.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::harness::*;
use crate::telemetry::{deployment, scrape, sighup};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/grafana/tessera.json"
);

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: not JSON: {e}"))
}

/// Every panel, those inside collapsed rows included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let top = d["panels"]
        .as_array()
        .expect("dashboard has a panels array");
    top.iter()
        .flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten()))
        .collect()
}

/// Every PromQL query, with where it is: panel targets and query variables.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            out.push((format!("panel {}", p["title"]), expr.to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str());
            out.push((
                format!("variable {}", v["name"]),
                q.unwrap_or_default().into(),
            ));
        }
    }
    out
}

/// The `tessera_*` metric identifiers of a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (at, _) in expr.match_indices("tessera_") {
        if expr[..at].chars().next_back().is_some_and(ident) {
            continue;
        }
        let end = expr[at..]
            .find(|c: char| !ident(c))
            .map_or(expr.len(), |n| at + n);
        names.insert(expr[at..end].to_string());
    }
    names
}

/// Metric family → type, from the `# TYPE` lines of an exposition.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

/// A series name a query may select: a non-histogram family, or a
/// histogram's `_bucket`, `_sum` or `_count`.
fn exported(name: &str, fams: &BTreeMap<String, String>) -> bool {
    let histogram = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|base| fams.get(base).is_some_and(|k| k == "histogram"))
    });
    histogram || fams.get(name).is_some_and(|k| k != "histogram")
}

/// `promtool check rules` parses every panel query (Grafana's variables
/// replaced by values as Grafana would): a query Prometheus rejects fails.
fn promtool_parses(d: &Value) {
    let vars: Vec<String> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(|n| format!("${n}")))
        .collect();
    let rules: Vec<Value> = all_panels(d)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .enumerate()
        .map(|(i, t)| {
            let mut expr = t["expr"]
                .as_str()
                .unwrap_or_default()
                .replace("$__rate_interval", "5m");
            for v in &vars {
                expr = expr.replace(v.as_str(), ".*");
            }
            serde_json::json!({ "record": format!("dashboard:query{i}"), "expr": expr })
        })
        .collect();
    // JSON is YAML: promtool reads it as a rules file.
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let groups = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(file.path(), groups.to_string()).expect("write rules");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(file.path())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): scripts/install-deps.sh installs it")
        });
    assert!(
        out.status.success(),
        "promtool rejects a dashboard query:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboard_is_a_grafana_dashboard_on_a_prometheus_datasource_variable() {
    let d = dashboard();
    assert!(
        d["title"].as_str().is_some_and(|t| !t.is_empty()),
        "no title"
    );
    assert!(d["uid"].as_str().is_some_and(|t| !t.is_empty()), "no uid");
    assert!(d["schemaVersion"].as_u64().is_some(), "no schemaVersion");
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a datasource variable of type prometheus");
    let ds_uid = format!("${{{}}}", ds["name"].as_str().expect("variable name"));
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(
            v["datasource"]["uid"],
            ds_uid.as_str(),
            "variable {}",
            v["name"]
        );
    }
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for p in all_panels(&d) {
        let title = &p["title"];
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title}: no id"));
        assert!(ids.insert(id), "panel {title}: id {id} used twice");
        let pos = &p["gridPos"];
        let (x, w) = (pos["x"].as_u64(), pos["w"].as_u64());
        assert!(
            pos["h"].as_u64().is_some() && pos["y"].as_u64().is_some(),
            "panel {title}: gridPos {pos}"
        );
        assert!(
            x.zip(w).is_some_and(|(x, w)| w > 0 && x + w <= 24),
            "panel {title}: gridPos {pos} is not within the 24 columns"
        );
        if p["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert_eq!(p["datasource"]["uid"], ds_uid.as_str(), "panel {title}");
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("panel {title}: no targets"));
        let mut refs = BTreeSet::new();
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.trim().is_empty(),
                "panel {title}: a target without expr"
            );
            assert!(
                !metric_names(expr).is_empty(),
                "panel {title}: {expr} names no tessera metric"
            );
            let r = t["refId"].as_str().unwrap_or_default();
            assert!(
                !r.is_empty() && refs.insert(r),
                "panel {title}: refId {r:?}"
            );
            assert_eq!(t["datasource"]["uid"], ds_uid.as_str(), "panel {title}");
        }
    }
    assert!(graphs >= 10, "only {graphs} panels");
    promtool_parses(&d);
    let named: BTreeSet<String> = queries(&d)
        .iter()
        .flat_map(|(_, q)| metric_names(q))
        .collect();
    for daemon in ["tessera_agent_", "tessera_authority_"] {
        assert!(
            named.iter().any(|n| n.starts_with(daemon)),
            "no panel for {daemon}*: {named:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_exported_by_a_live_daemon() {
    let mut d = deployment("").await;
    let auth = d.authority_telemetry().expect("the authority's telemetry");
    let (id, _) = d
        .register_self("dashboard/w", &[])
        .await
        .expect("register an entry");
    d.start_agent().await.expect("start the agent");
    let agent = d.agent_telemetry().expect("the agent's telemetry");
    wait_x509(&mut d.raw().await.expect("connect to the agent"), &[&id]).await;
    // An admin call the authority refuses: its RPC errors are counted.
    let out = d
        .admin(&["entry", "show", "no-such-entry"])
        .await
        .expect("run the admin CLI");
    assert!(!out.success(), "entry show of a missing entry succeeded");
    let mut fams = families(&scrape(&auth, "authority").await);
    // The agent's failed calls to the authority: a sync (SIGHUP) while it is down.
    d.stop_authority().await.expect("stop the authority");
    sighup(d.agent_pid().expect("agent running"));
    let text = poll(
        secs(20),
        "a failed SyncEntries in the agent's metrics",
        || {
            let agent = agent.clone();
            async move {
                let text = scrape(&agent, "agent").await;
                text.contains("tessera_agent_authority_rpc_errors_total{")
                    .then_some(text)
            }
        },
    )
    .await;
    fams.extend(families(&text));

    let mut missing = BTreeSet::new();
    for (place, query) in queries(&dashboard()) {
        for name in metric_names(&query) {
            if !exported(&name, &fams) {
                missing.insert(format!("{place}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard names metrics no daemon exports:\n{}\nexported: {:?}",
        missing.into_iter().collect::<Vec<_>>().join("\n"),
        fams.keys().collect::<Vec<_>>()
    );
}
