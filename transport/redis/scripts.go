package redis

import goredis "github.com/redis/go-redis/v9"

// publishScript orders, stores and publishes one publication atomically.
// See docs/redis.md for why each step is here.
//
// KEYS[1] meta hash {epoch, offset}, KEYS[2] history stream,
// KEYS[3] (optional) idempotency key.
// ARGV[1] data, ARGV[2] candidate epoch, ARGV[3] history size,
// ARGV[4] max age ms (0 = none), ARGV[5] dedupe window ms,
// ARGV[6] pub/sub channel.
// Returns "offset:epoch:time".
var publishScript = goredis.NewScript(`
if #KEYS == 3 then
  local prev = redis.call('GET', KEYS[3])
  if prev then return prev end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = string.format('%d-0', offset)
redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[3], id, 't', string.format('%d', ms), 'd', ARGV[1])
local maxage = tonumber(ARGV[4])
if maxage > 0 then
  local cutoff = ms - maxage
  while true do
    local e = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 64)
    local keep = nil
    for i = 1, #e do
      if tonumber(e[i][2][2]) >= cutoff then keep = e[i][1] break end
    end
    if keep then
      redis.call('XTRIM', KEYS[2], 'MINID', keep)
      break
    end
    if #e == 0 then break end
    local last = tonumber(string.match(e[#e][1], '^(%d+)'))
    redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-0', last + 1))
  end
  redis.call('PEXPIRE', KEYS[2], maxage)
end
local head = string.format('%d:%s:%d', offset, epoch, ms)
if #KEYS == 3 then
  redis.call('SET', KEYS[3], head, 'PX', ARGV[5])
end
redis.call('PUBLISH', ARGV[6], head .. ':' .. ARGV[1])
return head
`)

// historyScript reads a consistent slice of a channel's history.
//
// KEYS[1] meta hash, KEYS[2] history stream.
// ARGV[1] since offset (-1 = no Since), ARGV[2] since epoch,
// ARGV[3] limit (0 = all), ARGV[4] max age ms (0 = none).
// Returns {epoch, latest, recovered (0|1), id, time, data, id, time, data...}.
var historyScript = goredis.NewScript(`
local m = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
local epoch = m[1] or ''
local latest = tonumber(m[2] or '0')
local since = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local maxage = tonumber(ARGV[4])
local cutoff = 0
if maxage > 0 then
  local t = redis.call('TIME')
  cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - maxage
end
local out = {epoch, latest, 0}
local function push(e)
  out[#out + 1] = e[1]
  out[#out + 1] = e[2][2]
  out[#out + 1] = e[2][4]
end
if since >= 0 and epoch ~= '' and ARGV[2] == epoch and since <= latest then
  if since == latest then
    out[3] = 1
    return out
  end
  local next = string.format('%d-0', since + 1)
  local e
  if limit > 0 then
    e = redis.call('XRANGE', KEYS[2], next, '+', 'COUNT', limit)
  else
    e = redis.call('XRANGE', KEYS[2], next, '+')
  end
  if #e > 0 and e[1][1] == next and tonumber(e[1][2][2]) >= cutoff then
    out[3] = 1
    for i = 1, #e do push(e[i]) end
    return out
  end
end
local e
if limit > 0 then
  e = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
else
  e = redis.call('XREVRANGE', KEYS[2], '+', '-')
end
for i = #e, 1, -1 do
  if tonumber(e[i][2][2]) >= cutoff then push(e[i]) end
end
return out
`)

// presenceCleanScript deletes one presence entry of this node, unless its
// incarnation says otherwise, and its index entry.
//
// KEYS[1] channel presence hash, KEYS[2] node index set.
// ARGV[1] hash field, ARGV[2] index member, ARGV[3] incarnation,
// ARGV[4] "stale" (delete unless the value is this incarnation) or "own"
// (delete only if it is).
var presenceCleanScript = goredis.NewScript(`
local v = redis.call('HGET', KEYS[1], ARGV[1])
local mine = v == ARGV[3]
if (ARGV[4] == 'stale' and mine) or (ARGV[4] == 'own' and v and not mine) then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
`)
