-- The runner channel: which WebSocket connection holds a runner's one live channel.
--
-- Set when a channel opens, cleared when it closes (only by the connection that set it,
-- so a replaced connection's cleanup never clears its successor). Server processes on
-- one database use it to tell who holds a runner's channel: the newest connection wins,
-- and a process whose connection is no longer named here closes it. A process that
-- crashed leaves its value behind; `runner.last_seen`, refreshed while the channel is
-- open, tells a live channel from such a leftover.
ALTER TABLE runner ADD COLUMN connection TEXT;
