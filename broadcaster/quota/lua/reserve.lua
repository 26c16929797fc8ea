-- KEYS: minute, tat, block, inflight, cap, hour, sums ; ARGV: now_ms (0: Redis's clock;
--   another value only replays a run in a benchmark), per_min,
--   per_hour, interval_ms, max_wait_ms, member, margin_ms, lease_ms, max_in_flight,
--   minute_bucket_ms, hour_bucket_ms, hour_margin_ms
-- minute and hour are lists of 'bucket index:calls' oldest first; sums holds their totals
-- (fields m, h). A bucket is counted while its start is inside the window widened by its
-- margin; a margin at least a bucket wide makes that count every call the vendor's exact
-- window holds, and none older than the margin allows.
local now = tonumber(ARGV[1])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local per_min, per_hour = tonumber(ARGV[2]), tonumber(ARGV[3])
local interval, max_wait = tonumber(ARGV[4]), tonumber(ARGV[5])
local member, margin = ARGV[6], tonumber(ARGV[7])
local minute_w, hour_w, hour_margin = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local block = tonumber(redis.call('GET', KEYS[3]) or '0')
if block > now then return {'blocked', tostring(block - now)} end
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
local at = math.max(tat, now)
if at - now > max_wait then return {'wait', tostring(at - now)} end

local function split(entry)
  local sep = string.find(entry, ':', 1, true)
  return tonumber(string.sub(entry, 1, sep - 1)), tonumber(string.sub(entry, sep + 1))
end

-- Drop the buckets that left the window; returns the calls left in it and the start of
-- its oldest bucket (nil when empty).
local function prune(list, field, width, cutoff)
  local total = tonumber(redis.call('HGET', KEYS[7], field) or '0')
  while true do
    local head = redis.call('LINDEX', list, 0)
    if not head then
      if total ~= 0 then redis.call('HSET', KEYS[7], field, 0) end
      return 0, nil
    end
    local index, calls = split(head)
    if index * width > cutoff then return total, index * width end
    redis.call('LPOP', list)
    total = total - calls
    redis.call('HSET', KEYS[7], field, total)
  end
end

local function record(list, field, width)
  local index = math.floor(at / width)
  local last = redis.call('LINDEX', list, -1)
  local calls = 0
  if last then
    local last_index, last_calls = split(last)
    if last_index == index then calls = last_calls end
  end
  if calls > 0 then
    redis.call('LSET', list, -1, string.format('%d:%d', index, calls + 1))
  else
    redis.call('RPUSH', list, string.format('%d:1', index))
  end
  redis.call('HINCRBY', KEYS[7], field, 1)
end

local in_minute, minute_first = prune(KEYS[1], 'm', minute_w, at - 60000 - margin)
if in_minute >= per_min then
  return {'wait', tostring(minute_first + 60000 + margin - now + 1)}
end
local in_hour, hour_first = prune(KEYS[6], 'h', hour_w, at - 3600000 - hour_margin)
if in_hour >= per_hour then
  return {'wait', tostring(hour_first + 3600000 + hour_margin - now + 1)}
end
record(KEYS[1], 'm', minute_w)
record(KEYS[6], 'h', hour_w)
local ttl = 3600000 + 2 * hour_margin + 60000
for _, key in ipairs({KEYS[1], KEYS[6], KEYS[7]}) do redis.call('PEXPIRE', key, ttl) end
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
