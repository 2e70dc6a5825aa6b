-- Argo CD health of a VisioCluster, CaptionPool or RetentionPolicy, read as kstatus reads it
-- (docs/gitops.md): a spec not yet observed or Reconciling=True is Progressing, Stalled=True is
-- Degraded (only a person can help), Ready=True with neither is Healthy. Lua 5.1, as Argo CD runs.
local hs = {}
local status = obj.status
if status == nil or status.observedGeneration == nil
    or (obj.metadata.generation ~= nil and status.observedGeneration ~= obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "the operator has not yet observed the latest spec"
  return hs
end
local conditions = status.conditions or {}
local function find(type_)
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end
local stalled, reconciling, ready = find("Stalled"), find("Reconciling"), find("Ready")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "") .. ": " .. (stalled.message or "")
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = (reconciling.reason or "") .. ": " .. (reconciling.message or "")
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
else
  hs.status = "Progressing"
  hs.message = (ready and ready.message) or "waiting for the Ready condition"
end
return hs
