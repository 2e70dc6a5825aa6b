//! Step 4: every child of the stack in one [`ChildSet`], applied in order, then the children the spec
//! no longer asks for (TURN switched off, Redis made external, ...) pruned.

use k8s_openapi::api::rbac::v1::Subject;

use crate::api::VisioCluster;
use crate::builders::stack::Stack;
use crate::builders::tenant::operator_secrets_binding;
use crate::builders::BuildError;
use crate::runtime::children::ChildSet;
use crate::runtime::error::Result;

/// The stack's children in apply order: the LimitRange first (its defaults only reach pods created
/// after it) and the quota; the Secrets and the agent's identity before any pod that reads or runs as
/// them; the operator's own Secret binding (applied in step 1, kept here so it is not pruned).
pub fn children(vc: &VisioCluster, stack: &Stack, operator: Option<&Subject>) -> Result<ChildSet, BuildError> {
    let mut set = ChildSet::default();
    set.extend(stack.limit_range.clone())
        .extend(stack.resource_quota.clone())
        .add(stack.config_secret.clone())
        .extend(stack.credentials_secret.clone())
        .add(stack.agent.service_account.clone())
        .add(stack.agent.role.clone())
        .add(stack.agent.role_binding.clone());
    if let Some(me) = operator {
        set.add(operator_secrets_binding(vc, me)?);
    }
    set.extend(stack.admin_binding.clone());
    if let Some((deployment, _)) = &stack.redis {
        set.add(deployment.clone());
    }
    set.extend(stack.services.clone())
        .extend(stack.redis.as_ref().map(|(_, service)| service.clone()))
        .add(stack.pdb.clone())
        .extend(stack.network_policies.clone())
        .extend(stack.ingress.clone());
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::stack::{build_stack, Credentials};
    use crate::builders::testing::{cluster_with, test_cluster};

    fn creds() -> Credentials {
        Credentials { api_key: "APIkey".into(), api_secret: "s".repeat(48), redis_password: "r".repeat(32) }
    }

    #[test]
    fn every_object_of_the_stack_is_in_the_set_in_the_stacks_apply_order() {
        for vc in [test_cluster(), cluster_with(serde_json::json!({"tenant": {"adminGroups": ["minsante-admins"]}}))] {
            let stack = build_stack(&vc, &creds(), "agent:1").unwrap();
            let set = children(&vc, &stack, None).unwrap();
            let from_set: Vec<(&str, String)> = set.names();
            let from_stack: Vec<(&str, String)> =
                stack.object_metas().into_iter().map(|(k, m)| (k, m.name.clone().unwrap_or_default())).collect();
            let mut a = from_set.clone();
            let mut b = from_stack.clone();
            a.sort();
            b.sort();
            assert_eq!(a, b, "the set holds exactly the stack's objects");
            // The LimitRange and quota before anything, Secrets before the agent's identity.
            let pos = |kind: &str| from_set.iter().position(|(k, _)| *k == kind);
            assert!(pos("Secret") < pos("ServiceAccount"));
            assert!(pos("ServiceAccount") < pos("Service"));
        }
    }

    #[test]
    fn the_operators_own_secret_binding_is_kept() {
        let vc = test_cluster();
        let stack = build_stack(&vc, &creds(), "agent:1").unwrap();
        let me = Subject { kind: "ServiceAccount".into(), name: "visio-operator".into(), ..Default::default() };
        let set = children(&vc, &stack, Some(&me)).unwrap();
        let bindings = set.names().into_iter().filter(|(k, _)| *k == "RoleBinding").count();
        assert_eq!(
            bindings,
            children(&vc, &stack, None).unwrap().names().iter().filter(|(k, _)| *k == "RoleBinding").count() + 1
        );
    }
}
