//! The tenant's ResourceQuota and LimitRange (`spec.tenant.quota`, `spec.tenant.limits`), and the check
//! that the stack's own pods fit in them (what only the operator can see: the apiserver validates each
//! object alone, and would only refuse the pods one by one when the fleet grows).
//!
//! The check models the admission chain a pod goes through: API defaulting (a container with a limit
//! and no request gets the limit as request), the LimitRange defaults (`default`, falling back to `max`;
//! `defaultRequest`, falling back to the default limit) and maximum, then the quota (every container must
//! set cpu, memory and ephemeral-storage when the quota tracks them; the pods' total must stay under
//! `hard`). It counts `spec.sfu.replicas.min` SFU pods and the managed Redis, against the whole quota:
//! what else runs in the namespace (CaptionPool workers, the tenant's own pods) is not counted.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, PodSpec, ResourceQuota, ResourceQuotaSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::labels::{child_metadata, cluster_name, Component};
use super::BuildError;
use crate::api::VisioCluster;

/// Resources a quota requires every container to set (requests or limits) once it tracks them.
const MUST_SPECIFY: &[&str] = &["cpu", "memory", "ephemeral-storage"];

/// `<vc>-quota`, or `None` when `spec.tenant.quota` is unset.
pub fn resource_quota(vc: &VisioCluster) -> Result<Option<ResourceQuota>, BuildError> {
    let Some(quota) = &vc.spec.tenant.quota else { return Ok(None) };
    let hard = quantities("spec.tenant.quota.hard", &quota.hard)?;
    Ok(Some(ResourceQuota {
        metadata: child_metadata(vc, quota_name(cluster_name(vc)?), Component::Tenant)?,
        spec: Some(ResourceQuotaSpec { hard: Some(hard), ..ResourceQuotaSpec::default() }),
        status: None,
    }))
}

/// `<vc>-limits` (one `Container` item), or `None` when `spec.tenant.limits` is unset.
pub fn limit_range(vc: &VisioCluster) -> Result<Option<LimitRange>, BuildError> {
    let Some(limits) = &vc.spec.tenant.limits else { return Ok(None) };
    let map = |field: &'static str, m: &BTreeMap<String, String>| -> Result<_, BuildError> {
        Ok(if m.is_empty() { None } else { Some(quantities(field, m)?) })
    };
    Ok(Some(LimitRange {
        metadata: child_metadata(vc, limits_name(cluster_name(vc)?), Component::Tenant)?,
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: map("spec.tenant.limits.default", &limits.default)?,
                default_request: map("spec.tenant.limits.defaultRequest", &limits.default_request)?,
                max: map("spec.tenant.limits.max", &limits.max)?,
                ..LimitRangeItem::default()
            }],
        }),
    }))
}

/// Name of the ResourceQuota of the VisioCluster `cluster`.
pub fn quota_name(cluster: &str) -> String {
    format!("{cluster}-quota")
}

/// Name of the LimitRange of the VisioCluster `cluster`.
pub fn limits_name(cluster: &str) -> String {
    format!("{cluster}-limits")
}

fn quantities(field: &'static str, m: &BTreeMap<String, String>) -> Result<BTreeMap<String, Quantity>, BuildError> {
    m.iter()
        .map(|(k, v)| {
            parse_quantity(v).map_err(|e| BuildError::InvalidValue { field, message: format!("{k}: {e}") })?;
            Ok((k.clone(), Quantity(v.clone())))
        })
        .collect()
}

/// A Kubernetes quantity in thousandths of its unit (`500m` is 500, `2` is 2000, `1Ki` is 1_024_000),
/// rounded up like the apiserver does past three decimals. Negative quantities are refused: no field
/// here takes one.
pub fn parse_quantity(s: &str) -> Result<i128, String> {
    let err = || format!("{s:?} is not a quantity (for example 500m, 2, 4Gi, 1e3)");
    let s = s.trim();
    let digits_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 || number.contains('+') {
        return Err(err());
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    // (multiplier, power of ten) of the suffix.
    let (mult, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        e if e.len() > 1 && (e.starts_with('e') || e.starts_with('E')) => {
            let n: i32 = e[1..].parse().map_err(|_| err())?;
            if !(-30..=30).contains(&n) {
                return Err(err());
            }
            (1, n)
        }
        _ => return Err(err()),
    };
    if int.len() + frac.len() > 30 {
        return Err(err());
    }
    // value = (int.frac) * mult * 10^exp10 * 1000 (milli), as the integer mantissa * 10^scale.
    let mantissa: i128 = format!("{int}{frac}").parse().map_err(|_| err())?;
    let scale = exp10 + 3 - frac.len() as i32;
    let value = mantissa.checked_mul(mult).ok_or_else(err)?;
    let value = if scale >= 0 {
        value.checked_mul(10i128.checked_pow(scale as u32).ok_or_else(err)?).ok_or_else(err)?
    } else {
        let div = 10i128.checked_pow((-scale) as u32).ok_or_else(err)?;
        (value + div - 1) / div
    };
    if value > i64::MAX as i128 * 1000 {
        return Err(err());
    }
    Ok(value)
}

/// A quantity in thousandths, written back the short way (`4Gi`, `2`, `1500m`).
pub fn format_quantity(milli: i128) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let units = milli / 1000;
    for (suffix, m) in [("Ei", 1i128 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20)] {
        if units != 0 && units % m == 0 {
            return format!("{}{suffix}", units / m);
        }
    }
    units.to_string()
}

/// Pods the stack needs at its smallest, to check against the quota.
#[derive(Clone, Debug)]
pub struct PodNeed<'a> {
    /// What they are, for messages (`SFU pods (spec.sfu.replicas.min)`).
    pub what: &'static str,
    /// How many.
    pub count: u32,
    /// Their spec.
    pub spec: &'a PodSpec,
}

/// Something that will make the apiserver refuse the stack's pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Condition and Event reason: `QuotaTooSmall` or `LimitRangeRefusesPods`.
    pub reason: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
}

/// The stack's pods at their smallest: `spec.sfu.replicas.min` SFU pods and, when managed, the Redis pod.
pub fn stack_needs<'a>(vc: &VisioCluster, stack: &'a super::Stack) -> Vec<PodNeed<'a>> {
    let mut needs = vec![];
    if let Some(spec) = stack.sfu.pod.spec.as_ref() {
        let what = "SFU pods (spec.sfu.replicas.min)";
        needs.push(PodNeed { what, count: vc.spec.sfu.replicas.min.max(0) as u32, spec });
    }
    if let Some(spec) = stack.redis.as_ref().and_then(|(d, _)| d.spec.as_ref()).and_then(|s| s.template.spec.as_ref()) {
        needs.push(PodNeed { what: "managed Redis pod", count: 1, spec });
    }
    needs
}

/// Why the pods in `needs` cannot all run under the tenant's LimitRange and ResourceQuota (empty: they can).
pub fn fit_problems(vc: &VisioCluster, needs: &[PodNeed<'_>]) -> Vec<Problem> {
    let tenant = &vc.spec.tenant;
    let parsed = |m: &BTreeMap<String, String>| -> BTreeMap<String, i128> {
        m.iter().filter_map(|(k, v)| Some((k.clone(), parse_quantity(v).ok()?))).collect()
    };
    let (mut default_limit, mut default_request, max) = match &tenant.limits {
        Some(l) => (parsed(&l.default), parsed(&l.default_request), parsed(&l.max)),
        None => Default::default(),
    };
    // The LimitRange's own defaulting: default <- max, defaultRequest <- default.
    for (r, v) in &max {
        default_limit.entry(r.clone()).or_insert(*v);
    }
    for (r, v) in &default_limit {
        default_request.entry(r.clone()).or_insert(*v);
    }
    let mut problems = vec![];
    // Per pod kind: effective requests and limits of one pod, and which of MUST_SPECIFY a container lacks.
    let mut totals: Vec<(&PodNeed, Resources, Vec<Missing>)> = vec![];
    for need in needs {
        let mut missing = vec![];
        let mut effective = |c: &k8s_openapi::api::core::v1::Container| -> Resources {
            let (req, lim) = container_resources(c.resources.as_ref(), &default_request, &default_limit);
            for r in MUST_SPECIFY {
                if !req.contains_key(*r) {
                    missing.push((c.name.clone(), "requests", (*r).to_string()));
                }
                if !lim.contains_key(*r) {
                    missing.push((c.name.clone(), "limits", (*r).to_string()));
                }
            }
            for (r, m) in &max {
                if let Some(l) = lim.get(r).filter(|l| *l > m) {
                    problems.push(Problem {
                        reason: "LimitRangeRefusesPods",
                        message: format!(
                            "spec.tenant.limits.max[{r}]: the {} container {:?} has a {r} limit of {}, above the \
                             maximum of {}: the apiserver would refuse the pods",
                            need.what,
                            c.name,
                            format_quantity(*l),
                            format_quantity(*m)
                        ),
                    });
                }
            }
            for (r, q) in &req {
                if let Some(l) = lim.get(r).filter(|l| q > *l) {
                    problems.push(Problem {
                        reason: "LimitRangeRefusesPods",
                        message: format!(
                            "spec.tenant.limits.default[{r}]: the {} container {:?} requests {} of {r}, above its \
                             limit of {} (from the LimitRange default): the apiserver would refuse the pods",
                            need.what,
                            c.name,
                            format_quantity(*q),
                            format_quantity(*l)
                        ),
                    });
                }
            }
            Resources { requests: req, limits: lim }
        };
        let long_running: Vec<Resources> = need.spec.containers.iter().map(&mut effective).collect();
        let init: Vec<Resources> = need.spec.init_containers.iter().flatten().map(&mut effective).collect();
        let pod = pod_total(&long_running, &init);
        totals.push((need, pod, missing));
    }
    let Some(quota) = &tenant.quota else { return problems };
    for (key, hard_s) in &quota.hard {
        let Ok(hard) = parse_quantity(hard_s) else { continue };
        let (kind, resource) = match key.as_str() {
            "pods" | "count/pods" => ("pods", ""),
            k if MUST_SPECIFY.contains(&k) => ("requests", k),
            k => match k.split_once('.') {
                Some(("requests", r)) => ("requests", r),
                Some(("limits", r)) => ("limits", r),
                _ => continue,
            },
        };
        let mut need = 0i128;
        let mut parts = vec![];
        for (n, pod, missing) in &totals {
            if kind != "pods" && MUST_SPECIFY.contains(&resource) {
                if let Some((c, _, _)) = missing.iter().find(|(_, k, r)| *k == kind && r == resource) {
                    problems.push(Problem {
                        reason: "QuotaTooSmall",
                        message: format!(
                            "spec.tenant.quota.hard[{key}]: the quota requires every container to set {kind}.{resource}, \
                             and the {} container {c:?} sets none: set it in the stack's resources or give a default \
                             in spec.tenant.limits",
                            n.what
                        ),
                    });
                    continue;
                }
            }
            let one = match kind {
                "pods" => 1000,
                "requests" => pod.requests.get(resource).copied().unwrap_or(0),
                _ => pod.limits.get(resource).copied().unwrap_or(0),
            };
            let sum = one * n.count as i128;
            if sum > 0 {
                need += sum;
                parts.push(format!("{} {}", n.count, n.what));
            }
        }
        if need > hard {
            problems.push(Problem {
                reason: "QuotaTooSmall",
                message: format!(
                    "spec.tenant.quota.hard[{key}]: {} need {} and the quota allows {}: the fleet cannot reach \
                     spec.sfu.replicas.min ({} more are needed during an upgrade, spec.upgrade.maxSurge)",
                    parts.join(" and "),
                    format_quantity(need),
                    format_quantity(hard),
                    vc.spec.upgrade.max_surge
                ),
            });
        }
    }
    problems
}

/// A container (name) that sets no `requests` or `limits` (second) of a resource (third), even after defaults.
type Missing = (String, &'static str, String);

/// Effective requests and limits (thousandths) of a container or a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Resources {
    requests: BTreeMap<String, i128>,
    limits: BTreeMap<String, i128>,
}

/// A container's requests and limits after API defaulting and the LimitRange defaults.
fn container_resources(
    r: Option<&ResourceRequirements>,
    default_request: &BTreeMap<String, i128>,
    default_limit: &BTreeMap<String, i128>,
) -> (BTreeMap<String, i128>, BTreeMap<String, i128>) {
    let read = |m: Option<&BTreeMap<String, Quantity>>| -> BTreeMap<String, i128> {
        m.into_iter().flatten().filter_map(|(k, v)| Some((k.clone(), parse_quantity(&v.0).ok()?))).collect()
    };
    let mut limits = read(r.and_then(|r| r.limits.as_ref()));
    let mut requests = read(r.and_then(|r| r.requests.as_ref()));
    // API defaulting: an explicit limit without a request is the request.
    for (k, v) in &limits {
        requests.entry(k.clone()).or_insert(*v);
    }
    for (k, v) in default_limit {
        limits.entry(k.clone()).or_insert(*v);
    }
    for (k, v) in default_request {
        requests.entry(k.clone()).or_insert(*v);
    }
    (requests, limits)
}

/// A pod's total as the quota counts it: the sum of its containers, or its largest init container if larger.
fn pod_total(containers: &[Resources], init: &[Resources]) -> Resources {
    let mut total = Resources::default();
    for c in containers {
        for (k, v) in &c.requests {
            *total.requests.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &c.limits {
            *total.limits.entry(k.clone()).or_insert(0) += v;
        }
    }
    for c in init {
        for (k, v) in &c.requests {
            let e = total.requests.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
        for (k, v) in &c.limits {
            let e = total.limits.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::labels::owner_reference;
    use crate::builders::testing::{cluster_with, test_cluster};
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn quantities_parse_to_thousandths() {
        for (s, v) in [
            ("0", 0),
            ("1", 1000),
            ("500m", 500),
            ("0.5", 500),
            ("1.5", 1500),
            (".5", 500),
            ("2k", 2_000_000),
            ("1Ki", 1_024_000),
            ("4Gi", 4 * (1 << 30) * 1000),
            ("1.5Gi", 3 * (1 << 29) * 1000),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1E", 1_000_000_000_000_000_000_000),
            ("0.1m", 1),
            ("+2", 2000),
        ] {
            assert_eq!(parse_quantity(s), Ok(v), "{s}");
        }
        for bad in ["", "m", "1.2.3", "abc", "-1", "1Xi", "1 Gi", "1e", "1e99", "99999999999999999999Ei"] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities_format_short() {
        assert_eq!(format_quantity(1500), "1500m");
        assert_eq!(format_quantity(2000), "2");
        assert_eq!(format_quantity(4 * (1 << 30) * 1000), "4Gi");
        assert_eq!(format_quantity(128 * (1 << 20) * 1000), "128Mi");
        assert_eq!(format_quantity(0), "0");
    }

    fn with_tenant(tenant: serde_json::Value) -> VisioCluster {
        let mut t = json!({"displayName": "Intérieur"});
        crate::builders::testing::merge_json(&mut t, tenant);
        cluster_with(json!({"tenant": t}))
    }

    #[test]
    fn nothing_asked_nothing_built() {
        let vc = test_cluster();
        assert_eq!(resource_quota(&vc).unwrap(), None);
        assert_eq!(limit_range(&vc).unwrap(), None);
    }

    #[test]
    fn quota_carries_the_spec_values_and_is_owned() {
        let vc = with_tenant(json!({"quota": {"hard": {"requests.cpu": "40", "limits.memory": "160Gi", "pods": "30",
            "requests.nvidia.com/gpu": "4"}}}));
        let q = resource_quota(&vc).unwrap().unwrap();
        assert_eq!(q.metadata.name.as_deref(), Some("visio-quota"));
        assert_eq!(q.metadata.namespace.as_deref(), Some("mininterieur"));
        assert_eq!(q.metadata.owner_references, Some(vec![owner_reference(&vc).unwrap()]));
        assert_eq!(q.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"], "tenant");
        let hard = q.spec.unwrap().hard.unwrap();
        assert_eq!(hard.len(), 4);
        assert_eq!(hard["requests.nvidia.com/gpu"], Quantity("4".into()));
        assert_eq!(hard["limits.memory"], Quantity("160Gi".into()));
    }

    #[test]
    fn limit_range_carries_the_spec_values_and_is_owned() {
        let vc = with_tenant(json!({"limits": {"default": {"cpu": "1"}, "defaultRequest": {"cpu": "250m"},
            "max": {"memory": "16Gi"}}}));
        let lr = limit_range(&vc).unwrap().unwrap();
        assert_eq!(lr.metadata.name.as_deref(), Some("visio-limits"));
        assert_eq!(lr.metadata.owner_references, Some(vec![owner_reference(&vc).unwrap()]));
        let item = &lr.spec.unwrap().limits[0];
        assert_eq!(item.type_, "Container");
        assert_eq!(item.default.as_ref().unwrap()["cpu"], Quantity("1".into()));
        assert_eq!(item.default_request.as_ref().unwrap()["cpu"], Quantity("250m".into()));
        assert_eq!(item.max.as_ref().unwrap()["memory"], Quantity("16Gi".into()));
        assert!(item.min.is_none() && item.max_limit_request_ratio.is_none());
        // Empty maps are left out, not sent as {}.
        let vc = with_tenant(json!({"limits": {"max": {"memory": "16Gi"}}}));
        let item = &limit_range(&vc).unwrap().unwrap().spec.unwrap().limits[0];
        assert!(item.default.is_none() && item.default_request.is_none());
    }

    #[test]
    fn a_value_that_is_no_quantity_names_the_field() {
        let vc = with_tenant(json!({"quota": {"hard": {"pods": "many"}}}));
        let err = resource_quota(&vc).unwrap_err();
        assert!(err.to_string().starts_with("spec.tenant.quota.hard: pods: "), "{err}");
    }

    fn problems(tenant: serde_json::Value, sfu: serde_json::Value) -> Vec<Problem> {
        let mut t = json!({"displayName": "Intérieur"});
        crate::builders::testing::merge_json(&mut t, tenant);
        let vc = cluster_with(json!({"tenant": t, "sfu": sfu}));
        let creds = crate::builders::Credentials {
            api_key: "APIq7Xk2mW9".into(),
            api_secret: "Zq1vB8nR4tY6uI0oP2aS5dF7gH9jK3lM".into(),
            redis_password: "Rp8sN2xV6cB4mQ1wE9rT7yU3iO5pA0sD".into(),
        };
        let stack = crate::builders::build_stack(&vc, &creds, "agent:1").unwrap();
        fit_problems(&vc, &stack_needs(&vc, &stack))
    }

    #[test]
    fn default_stack_fits_a_roomy_quota() {
        // Defaults: 2 SFU pods of 2010m / 2Gi+32Mi requested, and Redis at 100m / 128Mi.
        let p = problems(
            json!({"quota": {"hard": {"requests.cpu": "4200m", "requests.memory": "5Gi", "pods": "3"}}}),
            json!({}),
        );
        assert_eq!(p, vec![]);
    }

    #[test]
    fn quota_smaller_than_min_replicas_is_reported_naming_the_field() {
        let p = problems(json!({"quota": {"hard": {"requests.cpu": "4"}}}), json!({}));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].reason, "QuotaTooSmall");
        assert!(p[0].message.starts_with("spec.tenant.quota.hard[requests.cpu]: "), "{}", p[0].message);
        assert!(p[0].message.contains("need 4120m"), "{}", p[0].message);
        assert!(p[0].message.contains("spec.sfu.replicas.min"), "{}", p[0].message);
        let p = problems(json!({"quota": {"hard": {"pods": "2"}}}), json!({}));
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("need 3 "), "the Redis pod counts: {}", p[0].message);
    }

    #[test]
    fn a_tracked_resource_every_container_must_set() {
        // The SFU sets no cpu limit by default: a quota on limits.cpu refuses it...
        let p = problems(json!({"quota": {"hard": {"limits.cpu": "100"}}}), json!({}));
        assert!(!p.is_empty());
        assert!(p.iter().all(|p| p.reason == "QuotaTooSmall" && p.message.contains("limits.cpu")), "{p:?}");
        // ...unless the LimitRange gives a default, which then counts.
        let p =
            problems(json!({"quota": {"hard": {"limits.cpu": "100"}}, "limits": {"default": {"cpu": "4"}}}), json!({}));
        assert_eq!(p, vec![]);
        let p =
            problems(json!({"quota": {"hard": {"limits.cpu": "10"}}, "limits": {"default": {"cpu": "4"}}}), json!({}));
        assert_eq!(p.len(), 1, "2 SFU pods x 2 containers x 4 + Redis 4 = 20 > 10: {p:?}");
        // Extended resources need no declaration.
        assert_eq!(problems(json!({"quota": {"hard": {"requests.nvidia.com/gpu": "0"}}}), json!({})), vec![]);
    }

    #[test]
    fn limit_range_max_below_the_sfu_limit_is_reported() {
        let p = problems(json!({"limits": {"max": {"memory": "2Gi"}}}), json!({}));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].reason, "LimitRangeRefusesPods");
        assert!(p[0].message.starts_with("spec.tenant.limits.max[memory]: "), "{}", p[0].message);
        assert!(p[0].message.contains("4Gi"), "{}", p[0].message);
        assert_eq!(problems(json!({"limits": {"max": {"memory": "8Gi"}}}), json!({})), vec![]);
        // A default limit below an explicit request.
        let p = problems(json!({"limits": {"default": {"cpu": "1"}}}), json!({}));
        assert!(p.iter().any(|p| p.message.starts_with("spec.tenant.limits.default[cpu]: ")), "{p:?}");
    }

    fn pod(cpu_requests: &[i64]) -> PodSpec {
        PodSpec {
            containers: cpu_requests
                .iter()
                .enumerate()
                .map(|(i, m)| k8s_openapi::api::core::v1::Container {
                    name: format!("c{i}"),
                    resources: Some(ResourceRequirements {
                        requests: Some([("cpu".to_string(), Quantity(format!("{m}m")))].into()),
                        limits: Some([("cpu".to_string(), Quantity(format!("{m}m")))].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    proptest! {
        #[test]
        fn quantities_round_trip(n in 0i64..1_000_000, suffix in proptest::sample::select(&["", "m", "k", "M", "Ki", "Mi", "Gi"])) {
            let milli = parse_quantity(&format!("{n}{suffix}")).unwrap();
            prop_assert_eq!(parse_quantity(&format_quantity(milli)).unwrap(), milli);
        }

        /// The fit check is exact: the quota fits iff min x one pod's requests <= hard, so it grows monotonically.
        #[test]
        fn quota_fits_exactly_when_the_sum_does(
            requests in proptest::collection::vec(1i64..5000, 1..4),
            min in 1i32..20,
            hard_milli in 0i64..200_000,
        ) {
            let vc = with_tenant(json!({"quota": {"hard": {"requests.cpu": format!("{hard_milli}m")}}}));
            let mut vc = vc;
            vc.spec.sfu.replicas.min = min;
            let spec = pod(&requests);
            let needs = [PodNeed { what: "SFU pods", count: min as u32, spec: &spec }];
            let need: i64 = requests.iter().sum::<i64>() * min as i64;
            let p = fit_problems(&vc, &needs);
            prop_assert_eq!(p.is_empty(), need <= hard_milli, "{:?}", p);
            vc.spec.tenant.quota.as_mut().unwrap().hard.insert("requests.cpu".into(), format!("{need}m"));
            prop_assert!(fit_problems(&vc, &needs).is_empty(), "a quota of exactly the need fits");
        }
    }
}
