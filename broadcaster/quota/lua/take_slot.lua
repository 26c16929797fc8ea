-- KEYS: inflight, cap, block ; ARGV: member, lease_ms, max_in_flight
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local block = tonumber(redis.call('GET', KEYS[3]) or '0')
if block > now then return {'blocked', tostring(block - now)} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = math.min(tonumber(ARGV[3]), tonumber(redis.call('GET', KEYS[2]) or ARGV[3]))
if redis.call('ZCARD', KEYS[1]) >= cap then return {'busy', '0'} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return {'ok', '0'}
