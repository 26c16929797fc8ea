-- KEYS: block, level ; ARGV: first_ms, max_ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local until_ = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > now then return tostring(until_ - now) end
local level = redis.call('INCR', KEYS[2])
local duration = math.min(tonumber(ARGV[1]) * 2 ^ (level - 1), tonumber(ARGV[2]))
redis.call('SET', KEYS[1], tostring(now + duration), 'PX', math.ceil(duration))
redis.call('PEXPIRE', KEYS[2], math.ceil(duration) + 600000)
return tostring(duration)
