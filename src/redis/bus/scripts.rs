//! The Lua scripts that make each change to the shared truth one atomic step: bump, reserve,
//! publish, read the log, raise.

pub(super) const BUMP: &str = r#"
local mode, batch, now, origin, test, maxlen, ts, window = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if window ~= '0' and not redis.call('SET', KEYS[10], '1', 'NX', 'PX', window) then
  return {0, '', 1, {}}
end
local bumped = {}
local overtaken = {}
for i = 9, #ARGV, 2 do
  local t, want = ARGV[i], tonumber(ARGV[i + 1])
  local b = redis.call('HGET', KEYS[2], t) or ''
  if mode == 'force' or (mode == 'advance' and b < batch) then
    local cur = tonumber(redis.call('HGET', KEYS[1], t) or '0')
    local res = tonumber(redis.call('HGET', KEYS[9], t) or '0')
    local v = want
    if v <= cur then
      if want > 0 then table.insert(overtaken, t) end
      v = math.max(cur, res) + 1
    end
    redis.call('HSET', KEYS[1], t, v)
    if v > res then redis.call('HSET', KEYS[9], t, v) end
    redis.call('HSET', KEYS[3], t, ARGV[3])
    if mode == 'advance' then redis.call('HSET', KEYS[2], t, batch) end
    table.insert(bumped, t)
  elseif mode == 'adopt' and b == '' then
    redis.call('HSET', KEYS[2], t, batch)
    if not redis.call('HGET', KEYS[1], t) then redis.call('HSET', KEYS[1], t, 0) end
  end
end
local label = redis.call('HGET', KEYS[4], 'batch') or ''
if batch > label and (mode ~= 'force' or #bumped > 0) then
  redis.call('HSET', KEYS[4], 'batch', batch)
  label = batch
end
if #bumped == 0 then return {0, '', 0, {}} end
redis.call('HSET', KEYS[4], 'last_update_ms', ARGV[3])
redis.call('HINCRBY', KEYS[4], 'generation', 1)
redis.call('SET', KEYS[7], label)
redis.call('SET', KEYS[8], string.format('%.3f', now / 1000))
local seq = redis.call('INCR', KEYS[5])
local all = redis.call('HGETALL', KEYS[1])
local versions = {}
for i = 1, #all, 2 do versions[all[i]] = tonumber(all[i + 1]) end
local event = cjson.encode({seq = seq, at_ms = now, origin = origin, type = 'warehouse_updated',
  timestamp = ts, tables = bumped, versions = versions, batch = batch, test = (test == '1')})
redis.call('XADD', KEYS[6], 'MAXLEN', '~', maxlen, '*', 'seq', seq, 'body', event)
redis.call('PUBLISH', 'freshcache:events', event)
redis.call('PUBLISH', 'warehouse_updated', cjson.encode({timestamp = ts, tables = bumped,
  versions = versions, batch = batch, test = (test == '1'), freshcache_seq = seq}))
return {seq, event, 0, overtaken}
"#;

/// Reserves one number per table above its version and above every number reserved before.
pub(super) const RESERVE: &str = r#"
local out = {}
for i = 1, #ARGV do
  local t = ARGV[i]
  local cur = tonumber(redis.call('HGET', KEYS[1], t) or '0')
  local res = tonumber(redis.call('HGET', KEYS[2], t) or '0')
  local v = math.max(cur, res) + 1
  redis.call('HSET', KEYS[2], t, v)
  out[i] = v
end
return out
"#;

pub(super) const PUBLISH: &str = r#"
local seq = redis.call('INCR', KEYS[1])
local body = string.gsub(ARGV[2], '^{"seq":0,', '{"seq":' .. seq .. ',', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'seq', seq, 'body', body)
redis.call('PUBLISH', 'freshcache:events', body)
return {seq, body}
"#;

pub(super) const READ_LOG: &str = r#"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
if ARGV[2] then
  return {epoch, seq, redis.call('XRANGE', KEYS[2], ARGV[2], '+', 'COUNT', 1000)}
end
return {epoch, seq, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)}
"#;

pub(super) const RAISE: &str = r#"
local raised = 0
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[1]) > seq then redis.call('SET', KEYS[3], ARGV[1]) end
redis.call('HSET', KEYS[5], 'truth_epoch', ARGV[2])
for i = 3, #ARGV, 3 do
  local t, v, b = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local cur = tonumber(redis.call('HGET', KEYS[1], t) or '0')
  if v > cur then redis.call('HSET', KEYS[1], t, v); raised = raised + 1 end
  if v > tonumber(redis.call('HGET', KEYS[4], t) or '0') then redis.call('HSET', KEYS[4], t, v) end
  if b > (redis.call('HGET', KEYS[2], t) or '') then redis.call('HSET', KEYS[2], t, b) end
end
return raised
"#;
