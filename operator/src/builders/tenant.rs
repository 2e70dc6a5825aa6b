//! The tenant's own administrators: a RoleBinding of the `visio-tenant-admin` ClusterRole (shipped by
//! the chart) to the groups in `spec.tenant.adminGroups`, in the tenant's namespace only. Binding a
//! ClusterRole in a namespace grants its rules there and nowhere else, so a ministry's admins manage
//! their own VisioClusters, CaptionPools and RetentionPolicies and cannot see another ministry's.

use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::labels::{child_metadata, cluster_name, Component};
use super::BuildError;
use crate::api::VisioCluster;

/// The ClusterRole the chart ships for tenant administrators.
pub const TENANT_ADMIN_CLUSTER_ROLE: &str = "visio-tenant-admin";

/// `<vc>-tenant-admins`, or `None` when the spec names no admin group.
pub fn admin_binding(vc: &VisioCluster) -> Result<Option<RoleBinding>, BuildError> {
    let groups = &vc.spec.tenant.admin_groups;
    if groups.is_empty() {
        return Ok(None);
    }
    // The API refuses these (CEL); an object stored before that rule still must not get them bound.
    if let Some(g) = groups.iter().find(|g| g.starts_with("system:") || g.chars().any(char::is_control)) {
        return Err(BuildError::InvalidValue {
            field: "spec.tenant.adminGroups",
            message: format!(
                "{g:?} cannot administer a tenant: Kubernetes' system: groups and control characters are refused"
            ),
        });
    }
    let mut subjects: Vec<Subject> = groups
        .iter()
        .map(|g| Subject {
            kind: "Group".into(),
            name: g.clone(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            namespace: None,
        })
        .collect();
    subjects.sort_by(|a, b| a.name.cmp(&b.name));
    subjects.dedup_by(|a, b| a.name == b.name);
    Ok(Some(RoleBinding {
        metadata: child_metadata(vc, format!("{}-tenant-admins", cluster_name(vc)?), Component::Credentials)?,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: TENANT_ADMIN_CLUSTER_ROLE.into(),
        },
        subjects: Some(subjects),
    }))
}

/// The ClusterRole (shipped by the chart) of the operator's Secret rights in one tenant namespace.
pub const OPERATOR_SECRETS_CLUSTER_ROLE: &str = "visio-operator-tenant-secrets";

/// `<vc>-operator-secrets`: binds the operator (`operator`, from its SelfSubjectReview) to its Secret
/// rights in the VisioCluster's namespace, owned by the VisioCluster so that the rights go with it.
pub fn operator_secrets_binding(vc: &VisioCluster, operator: &Subject) -> Result<RoleBinding, BuildError> {
    let meta = child_metadata(vc, format!("{}-operator-secrets", cluster_name(vc)?), Component::Credentials)?;
    Ok(secrets_binding(meta, operator))
}

/// The same binding for any owner: `meta` carries its name, namespace, labels and owner reference.
pub fn secrets_binding(meta: ObjectMeta, operator: &Subject) -> RoleBinding {
    RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: OPERATOR_SECRETS_CLUSTER_ROLE.into(),
        },
        subjects: Some(vec![operator.clone()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::labels::owner_reference;
    use crate::builders::testing::{cluster_with, test_cluster};
    use serde_json::json;

    #[test]
    fn system_groups_are_never_bound() {
        for g in ["system:authenticated", "system:serviceaccounts", "system:masters", "admins\n"] {
            let vc = cluster_with(json!({"tenant": {"displayName": "X", "adminGroups": ["ministere-admins", g]}}));
            let err = admin_binding(&vc).unwrap_err();
            assert!(err.to_string().starts_with("spec.tenant.adminGroups: "), "{err}");
        }
    }

    #[test]
    fn no_groups_no_binding() {
        assert!(admin_binding(&test_cluster()).unwrap().is_none());
    }

    #[test]
    fn groups_are_bound_to_the_tenant_admin_role_in_the_namespace() {
        let vc = cluster_with(json!({"tenant": {"displayName": "Intérieur",
            "adminGroups": ["oidc:visio-admins-interieur", "oidc:dsi-interieur", "oidc:visio-admins-interieur"]}}));
        let rb = admin_binding(&vc).unwrap().unwrap();
        assert_eq!(rb.metadata.name.as_deref(), Some("visio-tenant-admins"));
        assert_eq!(rb.metadata.namespace.as_deref(), Some("mininterieur"));
        assert_eq!(rb.metadata.owner_references, Some(vec![owner_reference(&vc).unwrap()]));
        assert_eq!(rb.role_ref.kind, "ClusterRole");
        assert_eq!(rb.role_ref.name, TENANT_ADMIN_CLUSTER_ROLE);
        let names: Vec<_> = rb.subjects.unwrap().iter().map(|s| (s.kind.clone(), s.name.clone())).collect();
        assert_eq!(
            names,
            [
                ("Group".to_string(), "oidc:dsi-interieur".to_string()),
                ("Group".into(), "oidc:visio-admins-interieur".into())
            ],
            "sorted, deduplicated groups only"
        );
    }

    #[test]
    fn the_operator_binds_itself_to_secrets_in_the_namespace_only() {
        let vc = test_cluster();
        let sa = Subject {
            kind: "ServiceAccount".into(),
            name: "visio-operator".into(),
            namespace: Some("visio-system".into()),
            api_group: None,
        };
        let rb = operator_secrets_binding(&vc, &sa).unwrap();
        assert_eq!(rb.metadata.name.as_deref(), Some("visio-operator-secrets"));
        assert_eq!(rb.metadata.namespace, vc.metadata.namespace);
        assert_eq!(rb.metadata.owner_references, Some(vec![owner_reference(&vc).unwrap()]));
        assert_eq!(
            (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
            ("ClusterRole", OPERATOR_SECRETS_CLUSTER_ROLE)
        );
        assert_eq!(rb.subjects, Some(vec![sa]));
    }
}
