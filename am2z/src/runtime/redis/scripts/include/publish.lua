-- Publishing: on one node the runtime's channels are prefix-wide (`<p>:done`), published
-- with `PUBLISH`; on a cluster they are shard channels carrying the hash tag of the slot
-- they live on (`<p>:{<session>}:done`), published with `SPUBLISH` so a message reaches
-- the node of its slot only. A prefix holds no `{`, so the channel's name says which.
local function publish(channel, message)
  if string.find(channel, '{', 1, true) then
    redis.call('SPUBLISH', channel, message)
  else
    redis.call('PUBLISH', channel, message)
  end
end
