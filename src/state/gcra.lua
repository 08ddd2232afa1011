-- GCRA (the generic cell rate algorithm, as governor runs it in one process) for one
-- bucket shared by every sidecar of a channel, in one round trip, on Redis's own clock:
-- sidecars whose clocks disagree still agree on the bucket.
--
-- KEYS[1]  the bucket: its theoretical arrival time (TAT), in microseconds of Redis's
--          clock, the moment the bucket is full again.
-- ARGV[1]  the emission interval (time between two tokens), in microseconds.
-- ARGV[2]  the burst: how many tokens a full bucket holds.
--
-- Answers 0 when a token was taken, else how many microseconds until this call would
-- get one (nothing is taken then). The key expires once the bucket is full again.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local new_tat = tat + emission
local allowed_at = new_tat - emission * burst
if allowed_at > now then
  return allowed_at - now
end
-- %d: Lua 5.1 would write a number this large as 1.7e+15, losing the microseconds.
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
