//! The apiserver's audit log (e2e/cluster runs kube-apiserver with e2e/audit-policy.yaml): every client's
//! writes and the operator's reads, one JSON line per request stage. The benches and the idle test count
//! the operator's requests here, by the identity it runs as ([`OPERATOR`]), never from its own code and
//! never mixed with kube-controller-manager's, kwok's or the tests' own.
//!
//! A request counts once: at `ResponseComplete`, except a watch, counted when it opens
//! (`ResponseStarted`; its `ResponseComplete` comes when it closes, and says so in [`Counts::watches_closed`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

/// The user the operator runs as in the local control plane (the CN of its client certificate).
pub const OPERATOR: &str = "visio-operator";

/// What a count is kept by: who, which verb, which resource and subresource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// `visio-operator`, or another client as `user (program)`, the program from its User-Agent
    /// (kube-controller-manager, kube-scheduler, kwok and the tests share the admin's certificate).
    pub client: String,
    /// The audit verb: create, update, patch (server-side apply too), delete, deletecollection, get,
    /// list, watch.
    pub verb: String,
    /// `resource` or `resource/subresource`, with `group` prefixed for non-core groups' resources as
    /// the apiserver names them: `deployments.apps`.
    pub resource: String,
}

/// One audit line, the fields counted.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub key: Key,
    pub namespace: String,
    /// The answer's code (0 when the stage has none).
    pub code: u16,
    pub stage: String,
    pub received: Timestamp,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    stage: String,
    verb: String,
    user: User,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<Status>,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    request_received_timestamp: String,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    api_group: String,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    code: u16,
}

/// The client a request is kept under: the operator by its user; any other by user and program.
pub fn client_name(username: &str, user_agent: &str) -> String {
    if username == OPERATOR {
        return OPERATOR.to_string();
    }
    let program = user_agent.split('/').next().unwrap_or_default().trim();
    if program.is_empty() {
        username.to_string()
    } else {
        format!("{username} ({program})")
    }
}

/// One line of the log; an error names what it could not read.
pub fn parse_line(line: &str) -> Result<Request> {
    let l: Line = serde_json::from_str(line).with_context(|| format!("an audit line: {line:.200}"))?;
    let o = l.object_ref.unwrap_or(ObjectRef {
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        api_group: String::new(),
    });
    let mut resource = if o.api_group.is_empty() { o.resource } else { format!("{}.{}", o.resource, o.api_group) };
    if resource.is_empty() {
        // A request for no object (discovery, /version): its path.
        resource = l.request_uri.split('?').next().unwrap_or_default().to_string();
    }
    if !o.subresource.is_empty() {
        resource = format!("{resource}/{}", o.subresource);
    }
    let received: Timestamp = l
        .request_received_timestamp
        .parse()
        .with_context(|| format!("requestReceivedTimestamp {}", l.request_received_timestamp))?;
    Ok(Request {
        key: Key { client: client_name(&l.user.username, &l.user_agent), verb: l.verb, resource },
        namespace: o.namespace,
        code: l.response_status.map(|s| s.code).unwrap_or(0),
        stage: l.stage,
        received,
    })
}

/// Counts of requests received in a time window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Requests by key, each once (see the module's note on watches).
    pub by_key: BTreeMap<Key, u64>,
    /// Of those, the ones answered with an error (code 400 and above), by key and code.
    pub refused: BTreeMap<(Key, u16), u64>,
    /// Watches that closed in the window, by client.
    pub watches_closed: BTreeMap<String, u64>,
}

/// Write verbs (the audit policy logs them for every client).
pub const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl Counts {
    /// Adds one line's request.
    pub fn add(&mut self, r: &Request) {
        let counted = match (r.verb(), r.stage.as_str()) {
            ("watch", "ResponseStarted") => true,
            ("watch", "ResponseComplete") => {
                *self.watches_closed.entry(r.key.client.clone()).or_default() += 1;
                false
            }
            (_, "ResponseComplete") => true,
            _ => false,
        };
        if counted {
            *self.by_key.entry(r.key.clone()).or_default() += 1;
            if r.code >= 400 {
                *self.refused.entry((r.key.clone(), r.code)).or_default() += 1;
            }
        }
    }

    /// The counts of `client`'s requests whose verb is one of `verbs`, by `resource verb`.
    pub fn of(&self, client: &str, verbs: &[&str]) -> BTreeMap<String, u64> {
        self.by_key
            .iter()
            .filter(|(k, _)| k.client == client && verbs.contains(&k.verb.as_str()))
            .map(|(k, n)| (format!("{} {}", k.resource, k.verb), *n))
            .collect()
    }

    /// Every client's writes but `client`'s, by `client: resource verb`.
    pub fn writes_of_others(&self, client: &str) -> BTreeMap<String, u64> {
        self.by_key
            .iter()
            .filter(|(k, _)| k.client != client && WRITES.contains(&k.verb.as_str()))
            .map(|(k, n)| (format!("{}: {} {}", k.client, k.resource, k.verb), *n))
            .collect()
    }

    /// `client`'s refused writes, by `resource verb code`.
    pub fn refused_of(&self, client: &str) -> BTreeMap<String, u64> {
        self.refused
            .iter()
            .filter(|((k, _), _)| k.client == client && WRITES.contains(&k.verb.as_str()))
            .map(|((k, code), n)| (format!("{} {} {code}", k.resource, k.verb), *n))
            .collect()
    }

    /// Watches `client` opened minus those that closed: the connections it holds at the window's end
    /// when the window starts before its first watch.
    pub fn watches_open(&self, client: &str) -> i64 {
        let opened: u64 =
            self.by_key.iter().filter(|(k, _)| k.client == client && k.verb == "watch").map(|(_, n)| n).sum();
        opened as i64 - self.watches_closed.get(client).copied().unwrap_or(0) as i64
    }
}

impl Request {
    fn verb(&self) -> &str {
        &self.key.verb
    }
}

/// Counts the lines of `text` whose request was received in `[from, to)`; `namespace` keeps only
/// requests in namespaces it accepts (cluster-scoped ones have an empty namespace).
pub fn count(text: &str, from: Timestamp, to: Timestamp, namespace: &dyn Fn(&str) -> bool) -> Result<Counts> {
    let mut c = Counts::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let r = parse_line(line)?;
        if r.received >= from && r.received < to && namespace(&r.namespace) {
            c.add(&r);
        }
    }
    Ok(c)
}

/// The audit log's path: `$VISIO_E2E_AUDIT_LOG` (e2e/run-tests and e2e/bench set it), or `<state>/logs/audit.log`.
pub fn log_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VISIO_E2E_AUDIT_LOG") {
        return Ok(PathBuf::from(p));
    }
    let state =
        std::env::var_os("VISIO_E2E_STATE").context("neither VISIO_E2E_AUDIT_LOG nor VISIO_E2E_STATE is set")?;
    Ok(PathBuf::from(state).join("logs/audit.log"))
}

/// The log and its rotated files (`audit-<time>.log` beside it, --audit-log-maxbackup), oldest first.
pub fn files(log: &Path) -> Result<Vec<PathBuf>> {
    let dir = log.parent().context("the audit log's folder")?;
    let stem = log.file_stem().and_then(|s| s.to_str()).context("the audit log's name")?;
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{stem}-")) && n.ends_with(".log"))
        })
        .collect();
    rotated.sort();
    if !log.exists() {
        bail!("no audit log at {} (is the apiserver run by e2e/cluster with its audit policy?)", log.display());
    }
    rotated.push(log.to_path_buf());
    Ok(rotated)
}

/// `--audit-log-maxbackup` in e2e/cluster.
const MAX_BACKUPS: usize = 4;

/// Counts the requests received in `[from, to)` in the log and its rotated files. Fails when there is
/// no log, or when the window starts before the oldest line kept (rotation dropped part of it).
pub fn read(log: &Path, from: Timestamp, to: Timestamp, namespace: &dyn Fn(&str) -> bool) -> Result<Counts> {
    let files = files(log)?;
    let first = std::fs::read_to_string(&files[0]).with_context(|| format!("reading {}", files[0].display()))?;
    // Only once rotation has deleted a file (e2e/cluster keeps MAX_BACKUPS) can a window's start be gone.
    if files.len() > MAX_BACKUPS {
        if let Some(oldest) = first.lines().next().map(parse_line).transpose()? {
            if oldest.received > from {
                bail!("the audit log was rotated past the window's start ({} > {from})", oldest.received);
            }
        }
    }
    let mut total = Counts::default();
    for (i, f) in files.iter().enumerate() {
        let text = if i == 0 {
            first.clone()
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        };
        // The last line of the live file may be half written.
        let text = if i + 1 == files.len() {
            text.rsplit_once('\n').map(|(t, _)| t.to_string()).unwrap_or_default()
        } else {
            text
        };
        let c = count(&text, from, to, namespace)?;
        total.merge(c);
    }
    Ok(total)
}

impl Counts {
    fn merge(&mut self, other: Counts) {
        for (k, n) in other.by_key {
            *self.by_key.entry(k).or_default() += n;
        }
        for (k, n) in other.refused {
            *self.refused.entry(k).or_default() += n;
        }
        for (k, n) in other.watches_closed {
            *self.watches_closed.entry(k).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(user: &str, agent: &str, verb: &str, stage: &str, obj: &str, code: u16, at: &str) -> String {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"x","stage":"{stage}","requestURI":"/x","verb":"{verb}","user":{{"username":"{user}","groups":["system:masters"]}},"sourceIPs":["127.0.0.1"],"userAgent":"{agent}","objectRef":{obj},"responseStatus":{{"metadata":{{}},"code":{code}}},"requestReceivedTimestamp":"{at}","stageTimestamp":"{at}"}}"#
        )
    }

    const POD: &str = r#"{"resource":"pods","namespace":"t000","name":"visio-sfu-0","apiVersion":"v1"}"#;
    const STATUS: &str = r#"{"resource":"retentionpolicies","subresource":"status","namespace":"t000","name":"m","apiGroup":"visio.io","apiVersion":"v1alpha1"}"#;
    const DEPLOY: &str = r#"{"resource":"deployments","namespace":"t001","apiGroup":"apps","apiVersion":"v1"}"#;
    const KCM: &str = "kube-controller-manager/v1.33.1 (linux/amd64) kubernetes/abc/replicaset-controller";

    fn all(_: &str) -> bool {
        true
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_line_reads_as_its_client_verb_and_resource() {
        let r = parse_line(&line(
            OPERATOR,
            "visio-operator/0.1",
            "patch",
            "ResponseComplete",
            STATUS,
            200,
            "2026-12-05T03:00:00.123456Z",
        ))
        .unwrap();
        assert_eq!(
            r.key,
            Key { client: OPERATOR.into(), verb: "patch".into(), resource: "retentionpolicies.visio.io/status".into() }
        );
        assert_eq!((r.namespace.as_str(), r.code), ("t000", 200));
        let r =
            parse_line(&line("visio-e2e-admin", KCM, "create", "ResponseComplete", POD, 201, "2026-12-05T03:00:00Z"))
                .unwrap();
        assert_eq!(r.key.client, "visio-e2e-admin (kube-controller-manager)");
        assert_eq!(r.key.resource, "pods");
        let r =
            parse_line(&line(OPERATOR, "", "get", "ResponseComplete", "null", 200, "2026-12-05T03:00:00Z")).unwrap();
        assert_eq!(r.key.resource, "/x", "a request for no object is named by its path");
        assert!(parse_line("{\"stage\": 1}").is_err());
        assert!(parse_line(&line(OPERATOR, "", "get", "ResponseComplete", POD, 200, "yesterday")).is_err());
    }

    #[test]
    fn each_request_counts_once_and_a_watch_when_it_opens() {
        let t = "2026-12-05T03:00:01Z";
        let text = [
            line(OPERATOR, "", "create", "ResponseComplete", POD, 201, t),
            line(OPERATOR, "", "watch", "ResponseStarted", POD, 200, t),
            line(OPERATOR, "", "watch", "ResponseStarted", DEPLOY, 200, t),
            line(OPERATOR, "", "watch", "ResponseComplete", POD, 200, t),
            line(OPERATOR, "", "patch", "ResponseComplete", STATUS, 409, t),
            line(OPERATOR, "", "patch", "ResponseComplete", STATUS, 200, t),
            line("visio-e2e-admin", KCM, "create", "ResponseComplete", POD, 201, t),
            line("visio-e2e-admin", KCM, "create", "Panic", POD, 500, t),
        ]
        .join("\n");
        let c = count(&text, at("2026-12-05T03:00:00Z"), at("2026-12-05T03:00:02Z"), &all).unwrap();
        let writes = c.of(OPERATOR, &WRITES);
        assert_eq!(
            writes,
            [("pods create".to_string(), 1), ("retentionpolicies.visio.io/status patch".to_string(), 2)]
                .into_iter()
                .collect()
        );
        assert_eq!(c.of(OPERATOR, &["watch"]).values().sum::<u64>(), 2);
        assert_eq!(c.watches_open(OPERATOR), 1);
        assert_eq!(
            c.refused_of(OPERATOR),
            [("retentionpolicies.visio.io/status patch 409".to_string(), 1)].into_iter().collect()
        );
        assert_eq!(
            c.writes_of_others(OPERATOR),
            [("visio-e2e-admin (kube-controller-manager): pods create".to_string(), 1)].into_iter().collect()
        );
    }

    #[test]
    fn the_window_and_the_namespace_filter_keep_only_what_they_say() {
        let text = [
            line(OPERATOR, "", "create", "ResponseComplete", POD, 201, "2026-12-05T02:59:59.999999Z"),
            line(OPERATOR, "", "create", "ResponseComplete", POD, 201, "2026-12-05T03:00:00Z"),
            line(OPERATOR, "", "create", "ResponseComplete", DEPLOY, 201, "2026-12-05T03:00:00.5Z"),
            line(OPERATOR, "", "create", "ResponseComplete", POD, 201, "2026-12-05T03:00:01Z"),
        ]
        .join("\n");
        let (from, to) = (at("2026-12-05T03:00:00Z"), at("2026-12-05T03:00:01Z"));
        let c = count(&text, from, to, &all).unwrap();
        assert_eq!(c.by_key.values().sum::<u64>(), 2);
        let c = count(&text, from, to, &|ns| ns == "t000").unwrap();
        assert_eq!(c.of(OPERATOR, &WRITES), [("pods create".to_string(), 1)].into_iter().collect());
    }

    #[test]
    fn a_missing_log_fails_instead_of_counting_zero() {
        let dir = std::env::temp_dir().join(format!("visio-audit-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("audit.log");
        let (from, to) = (at("2026-12-05T03:00:00Z"), at("2026-12-05T03:00:02Z"));
        assert!(read(&log, from, to, &all).is_err());
        let t = "2026-12-05T03:00:01Z";
        std::fs::write(
            dir.join("audit-2026-12-05T02-00-00.000.log"),
            line(OPERATOR, "", "create", "ResponseComplete", POD, 201, t) + "\n",
        )
        .unwrap();
        // The live file's last line, half written, is left for the next read.
        std::fs::write(&log, line(OPERATOR, "", "delete", "ResponseComplete", POD, 200, t) + "\n{\"kind\":\"Ev")
            .unwrap();
        let c = read(&log, from, to, &all).unwrap();
        assert_eq!(
            c.of(OPERATOR, &WRITES),
            [("pods create".to_string(), 1), ("pods delete".to_string(), 1)].into_iter().collect()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
