//! Step 5: every child of the pool in one [`ChildSet`], applied in order, then the orphans pruned.

use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;

use crate::builders::captions::CaptionStack;
use crate::runtime::apply;
use crate::runtime::children::ChildSet;
use crate::runtime::error::Result;
use crate::runtime::Context;

/// The pool's children in apply order: Secrets and the agent's identity before the pods that read or
/// run as them, the backends' NetworkPolicy before any transcriber (and any backend pod, created by the
/// next step) exists. The transcriber Deployment keeps the agent image it runs (see
/// [`keep_running_agent_image`]).
pub fn children(stack: &CaptionStack, ctx: &Context) -> Result<ChildSet> {
    let mut transcribers = stack.transcribers.clone();
    let current = ctx.stores.deployments.get(&ObjectRef::from_obj(&transcribers));
    keep_running_agent_image(&mut transcribers, current.as_deref())?;
    let mut set = ChildSet::default();
    set.add(stack.key_secret.clone())
        .add(stack.config_secret.clone())
        .add(stack.agent.service_account.clone())
        .add(stack.agent.role.clone())
        .add(stack.agent.role_binding.clone())
        .add(stack.service.clone())
        .add(stack.pdb.clone())
        .add(stack.network_policy.clone())
        .add(transcribers);
    Ok(set)
}

/// The agent image in a pod template, if it has the agent.
pub(super) fn agent_image_mut(d: &mut Deployment) -> Option<&mut Option<String>> {
    let spec = d.spec.as_mut()?.template.spec.as_mut()?;
    Some(&mut spec.containers.iter_mut().find(|c| c.name == crate::builders::sfu::AGENT_CONTAINER)?.image)
}

/// An operator upgrade alone must not replace the transcriber workers (each would drain for up to an hour
/// while a new one starts): when `current` was applied from this very template but for the agent image
/// (and the replica count, which the planner changes), its agent image is kept. Workers created later get
/// the new agent with the next real template change (pure).
pub fn keep_running_agent_image(desired: &mut Deployment, current: Option<&Deployment>) -> Result<()> {
    let Some(current) = current else { return Ok(()) };
    let Some(applied) = current.annotations().get(apply::APPLIED_HASH) else { return Ok(()) };
    let Some(running) = current
        .clone()
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().find(|c| c.name == crate::builders::sfu::AGENT_CONTAINER))
        .and_then(|c| c.image)
    else {
        return Ok(());
    };
    let mut as_applied = desired.clone();
    if let Some(image) = agent_image_mut(&mut as_applied) {
        *image = Some(running.clone());
    }
    if let Some(spec) = as_applied.spec.as_mut() {
        spec.replicas = current.spec.as_ref().and_then(|s| s.replicas);
    }
    // Hashed as `apply::ensure` stamps what it applies.
    if &apply::stamp(&mut as_applied)? == applied {
        if let Some(image) = agent_image_mut(desired) {
            *image = Some(running);
        }
    }
    Ok(())
}
