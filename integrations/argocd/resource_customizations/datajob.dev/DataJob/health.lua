-- Argo CD health check for datajob.dev/DataJob.
-- Install: argocd-cm key `resource.customizations.health.datajob.dev_DataJob` (docs/gitops.md).
-- Only base Lua: Argo CD gives scripts from argocd-cm no string, math or os library.
--
--   no status yet, or status older than the spec (observedGeneration) -> Progressing
--   pending, pending_cancellation                                    -> Progressing
--   running, completed                                               -> Healthy
--   cancelled                                                        -> Suspended
--   failed                                                           -> Degraded
local hs = { status = "Progressing", message = "waiting for the datajob-operator to pick the job up" }
local status = obj.status
if status == nil or status.state == nil then
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.message = "waiting for the datajob-operator to observe generation " .. generation
  return hs
end

-- The operator writes the same reason and message on every state condition; Ready has them.
local detail = nil
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if condition.type == "Ready" and condition.message ~= nil and condition.message ~= "" then
      detail = condition.message
    end
  end
end

local state = status.state
if state == "pending" or state == "pending_cancellation" then
  hs.status = "Progressing"
elseif state == "running" or state == "completed" then
  hs.status = "Healthy"
elseif state == "cancelled" then
  hs.status = "Suspended"
elseif state == "failed" then
  hs.status = "Degraded"
  local failures = status.failures
  if failures ~= nil and #failures > 0 then
    local last = failures[#failures]
    detail = last.reason .. ": " .. last.message
  end
else
  hs.status = "Unknown"
end

if detail ~= nil then
  hs.message = state .. ": " .. detail
else
  hs.message = state
end
return hs
