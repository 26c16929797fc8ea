-- KEYS: cap ; ARGV: max_in_flight, hold_ms
local cap = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
local lowered = math.max(1, math.min(cap, tonumber(ARGV[1])) - 1)
redis.call('SET', KEYS[1], tostring(lowered), 'PX', tonumber(ARGV[2]))
return lowered
