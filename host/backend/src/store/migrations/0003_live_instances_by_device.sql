-- The exchange counts one agent's live instances on one device: an index on
-- exactly that, so the count does not grow with the fleet or the history.
CREATE INDEX tokens_by_device_agent_expiry ON tokens(device_id, agent_id, expires_at);
