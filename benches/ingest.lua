-- wrk script: every request posts a new snapshot (unique snapshotId) of
-- about 1.5 KB, spread over 64 sessions, with the exporter's headers.
-- The run number (script argument) keeps ids unique across runs.
local counter = 0
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  run = args[1] or "0"
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"snapshotId":"r%s-t%d-%d","sessionId":"bench-%d","mode":"active","pad":"%s"}',
    run, tid, counter, counter % 64, string.rep("x", 1400))
  return wrk.format("POST", nil,
    { ["Content-Type"] = "application/json", ["X-Prime-Fabric-Channel"] = "prime-brain" }, body)
end
