-- wrk script: every request posts a new, valid snapshot (unique UUID v4
-- snapshotId) of about 1.2 KB, spread over 64 sessions, with the exporter's
-- headers, so every 201 is a sanitized, durable record.
-- The run number (script argument) keeps ids unique across runs.
local counter = 0
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  run = tonumber(args[1] or "0")
end

local template = '{"snapshotId":"%08x-%04x-4000-8000-%012x","sessionId":"bench-%d",'
  .. '"capturedAt":"2026-11-24T10:%02d:%02dZ","sequence":%d,"mode":"active",'
  .. '"transport":{"isPlaying":true,"tempo":120.0,"playheadBeats":8.0,"timeSignature":"4/4",'
  .. '"cycle":{"enabled":false,"startBeats":0.0,"endBeats":16.0}},'
  .. '"alsChannels":[{"channel":"energy","value":70.0,"normalized":0.7},{"channel":"pressure","value":40.0,"normalized":0.4}],'
  .. '"audioMetrics":{"latencyMs":10.0,"cpuLoad":0.4,"dropouts":0,"bufferSize":256,"sampleRate":48000},'
  .. '"harmonicState":{"key":"C","scale":"major","consonance":0.8,"tension":0.3,"velocityEnergy":0.5},'
  .. '"aiAnalysisFlags":[{"category":"mix","severity":"low","message":"the low end feels a little crowded"}],'
  .. '"bloomTrace":[{"action":"mix.eqCut","source":"bloom","outcome":"ignored","at":"2026-11-24T10:00:00Z"}],'
  .. '"issuedCommands":[{"type":"track.mute","target":"drums"}],'
  .. '"conversationTurns":[{"role":"user","text":"can you make the vocals sit better"},'
  .. '{"role":"prime","text":"a gentle cut around the low mids would let them breathe"}],'
  .. '"guidance":{"channel":"temperature","intensity":"whisper","text":"the mix is warming up nicely"}}'

function request()
  counter = counter + 1
  local body = string.format(template, run, tid, counter, counter % 64,
    math.floor(counter / 60) % 60, counter % 60, counter)
  return wrk.format("POST", nil,
    { ["Content-Type"] = "application/json", ["X-Prime-Fabric-Channel"] = "prime-brain" }, body)
end
