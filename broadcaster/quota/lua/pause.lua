-- KEYS: block ; ARGV: duration_ms. A pause the vendor asked for (HTTP 429 Retry-After):
-- extends a block in force, never shortens it, and does not escalate the 10053 level.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local until_ = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now + tonumber(ARGV[1]))
redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(until_ - now))
return tostring(until_)
