-- Runs Argo CD's health check of our resources (packaging/argocd/health.lua, given as arg[1]) on one
-- JSON object per stdin line, as Argo CD runs it (Lua 5.1, `obj` set); one JSON line per object out.
-- Needs Debian's lua5.1 and lua-cjson.
local cjson = require("cjson")
local chunk = assert(loadfile(arg[1]))
for line in io.lines() do
  local env = setmetatable({ obj = cjson.decode(line) }, { __index = _G })
  setfenv(chunk, env)
  local ok, hs = pcall(chunk)
  if ok then
    io.write(cjson.encode({ status = hs.status, message = hs.message }), "\n")
  else
    io.write(cjson.encode({ error = tostring(hs) }), "\n")
  end
end
