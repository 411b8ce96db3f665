-- A job's header: the small record scripts read and rewrite (`jobs` hash), its fields joined
-- by '|' with the processor's name, the only free text, last. Mirrored by `protocol::header`.
local function read_header(raw)
  if not raw then
    return nil
  end
  local fp, priority, token, deliveries, created, queued, attempt, attempts, version,
    run_attempts, name = string.match(raw,
      '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if not fp then
    return nil
  end
  return {
    fp = fp,
    priority = tonumber(priority) or 0,
    token = tonumber(token) or 0,
    deliveries = tonumber(deliveries) or 0,
    created_ms = tonumber(created) or 0,
    queued_ms = tonumber(queued) or 0,
    attempt = tonumber(attempt) or 0,
    attempts = tonumber(attempts) or 0,
    version = tonumber(version) or 0,
    run_attempts = tonumber(run_attempts) or 0,
    name = name,
  }
end

local function write_header(h)
  return table.concat({h.fp, num(h.priority), num(h.token), num(h.deliveries),
    num(h.created_ms), num(h.queued_ms), num(h.attempt), num(h.attempts), num(h.version),
    num(h.run_attempts), h.name}, '|')
end

-- The fields of a leased job a worker needs, as a reply record.
local function leased_record(id, h, body, deadline)
  return {'id', id, 'fp', h.fp, 'name', h.name, 'token', h.token, 'deliveries', h.deliveries,
    'created_ms', h.created_ms, 'attempt', h.attempt, 'attempts', h.attempts,
    'version', h.version, 'run_attempts', h.run_attempts, 'deadline', deadline,
    'body', body or ''}
end
