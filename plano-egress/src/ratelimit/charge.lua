-- Check and charge every bucket of one request atomically (one round trip).
-- KEYS[i]: bucket key. ARGV[1]: "1" to charge without checking (reconcile), else "0".
-- ARGV[3i-1], ARGV[3i], ARGV[3i+1]: cost, capacity, period in microseconds of KEYS[i].
-- Reply: {admitted 0|1, index of the rule that denied (0 if none), wait µs,
--         then per key: floor(level after), reset µs (time until full)}.
-- Token bucket identical to bucket.rs; the server's clock is the only clock, so replicas
-- with skewed clocks still agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local force = ARGV[1] == '1'
local n = #KEYS
local levels, caps, periods, costs = {}, {}, {}, {}
local deny, deny_wait = 0, -1
for i = 1, n do
  local cost = tonumber(ARGV[3 * i - 1])
  local cap = tonumber(ARGV[3 * i])
  local period = tonumber(ARGV[3 * i + 1])
  local level = cap
  local h = redis.call('HMGET', KEYS[i], 'l', 't')
  if h[1] and h[2] then
    local elapsed = now - tonumber(h[2])
    if elapsed < 0 then elapsed = 0 end
    level = math.min(cap, tonumber(h[1]) + elapsed * cap / period)
  end
  levels[i], caps[i], periods[i], costs[i] = level, cap, period, cost
  if not force and level < cost then
    local wait = (cost - level) * period / cap
    if wait > deny_wait then deny, deny_wait = i, wait end
  end
end
local admitted = 1
if deny > 0 then admitted = 0 end
local out = {admitted, deny, math.ceil(math.max(deny_wait, 0))}
for i = 1, n do
  local level = levels[i]
  if admitted == 1 then
    level = math.min(caps[i], level - costs[i])
    if level >= caps[i] then
      redis.call('DEL', KEYS[i])
    else
      redis.call('HSET', KEYS[i], 'l', string.format('%.17g', level), 't', string.format('%.0f', now))
      local ttl_ms = math.ceil((caps[i] - level) * periods[i] / caps[i] / 1000) + 1000
      redis.call('PEXPIRE', KEYS[i], ttl_ms)
    end
  end
  out[#out + 1] = math.floor(level)
  out[#out + 1] = math.ceil((caps[i] - math.min(level, caps[i])) * periods[i] / caps[i])
end
return out
