-- KEYS: log, tat, block, inflight, cap ; ARGV: now_hint(unused), per_min, per_hour,
--   interval_ms, max_wait_ms, member, margin_ms, lease_ms, max_in_flight
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local per_min, per_hour = tonumber(ARGV[2]), tonumber(ARGV[3])
local interval, max_wait = tonumber(ARGV[4]), tonumber(ARGV[5])
local member, margin = ARGV[6], tonumber(ARGV[7])
local block = tonumber(redis.call('GET', KEYS[3]) or '0')
if block > now then return {'blocked', tostring(block - now)} end
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
local at = math.max(tat, now)
if at - now > max_wait then return {'wait', tostring(at - now)} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', at - 3600000 - margin)
local in_minute = redis.call('ZCOUNT', KEYS[1], at - 60000 - margin, '+inf')
if in_minute >= per_min then
  local first = redis.call('ZRANGEBYSCORE', KEYS[1], at - 60000 - margin, '+inf',
                           'WITHSCORES', 'LIMIT', 0, 1)
  return {'wait', tostring(tonumber(first[2]) + 60000 + margin - now + 1)}
end
if redis.call('ZCARD', KEYS[1]) >= per_hour then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {'wait', tostring(tonumber(first[2]) + 3600000 + margin - now + 1)}
end
redis.call('ZADD', KEYS[1], at, member)
redis.call('PEXPIRE', KEYS[1], 3600000 + 2 * margin + 60000)
redis.call('SET', KEYS[2], tostring(math.max(tat, at - interval) + interval), 'PX', 3600000)
if at <= now then
  -- due at once: take the in-flight slot here too, saving the caller a round trip
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  local cap = math.min(tonumber(ARGV[9]), tonumber(redis.call('GET', KEYS[5]) or ARGV[9]))
  if redis.call('ZCARD', KEYS[4]) < cap then
    redis.call('ZADD', KEYS[4], now + tonumber(ARGV[8]), member)
    redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[8]) * 2)
    return {'slot', '0'}
  end
end
return {'ok', tostring(at - now)}
