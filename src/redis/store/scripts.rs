//! The Lua scripts of the shared store: put an entry with its indexes, extend a lease, release
//! one.

/// KEYS: entry, pointer, lease. ARGV: body, ttl (ms), versions text, created (ms), the lease
/// token (empty for a put without a lease). Returns 1 stored, 0 lease taken over by another
/// token, 2 an entry created later is stored. Versions are compared per table as decimal strings
/// (by length, then by digits), since Lua numbers cannot hold every `u64`.
pub(super) const PUT: &str = r"
local function num_cmp(a, b)
  if #a ~= #b then return (#a < #b) and -1 or 1 end
  if a == b then return 0 end
  return (a < b) and -1 or 1
end
local function versions_cmp(a, b)
  local x, y = {}, {}
  for p in string.gmatch(a, '[^.]+') do x[#x + 1] = p end
  for p in string.gmatch(b, '[^.]+') do y[#y + 1] = p end
  for i = 1, math.max(#x, #y) do
    local c = num_cmp(x[i] or '0', y[i] or '0')
    if c ~= 0 then return c end
  end
  return 0
end
local holder = false
if ARGV[5] ~= '' then
  holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[5] then return 0 end
end
if holder ~= ARGV[5] then
  local held = redis.call('GET', KEYS[1])
  if held then
    local ok, e = pcall(cjson.decode, held)
    if ok and type(e) == 'table' and type(e['created_ms']) == 'number'
        and e['created_ms'] > tonumber(ARGV[4]) then
      return 2
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local pv = redis.call('HGET', KEYS[2], 'versions')
local newest = (not pv) or (not string.match(pv, '^[0-9][0-9.]*$'))
if not newest then
  local c = versions_cmp(ARGV[3], pv)
  local pc = tonumber(redis.call('HGET', KEYS[2], 'created'))
  newest = c > 0 or (c == 0 and ((not pc) or pc <= tonumber(ARGV[4])))
end
if newest then
  redis.call('HSET', KEYS[2], 'versions', ARGV[3], 'created', ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if ARGV[5] ~= '' and holder == ARGV[5] then redis.call('DEL', KEYS[3]) end
return 1
";

pub(super) const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";
