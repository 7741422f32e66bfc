-- Policies (issue 8): one document per agent, '*' for the global defaults.
-- The document is JSON as edgeward_core::policy::Policy::to_json writes it.
CREATE TABLE policies (
    agent      TEXT PRIMARY KEY,
    document   TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);

-- Approval tickets: one per distinct action a policy sent for approval.
-- Everything shown to an approver is stored already redacted; the
-- fingerprint binds a decision to the exact action (agent, user, grant,
-- method, URL, forwarded headers, body hash).
CREATE TABLE approvals (
    id           TEXT PRIMARY KEY,
    agent        TEXT NOT NULL,
    instance     TEXT NOT NULL,
    user         TEXT,
    root         TEXT NOT NULL,
    grant_name   TEXT NOT NULL,
    method       TEXT NOT NULL,
    url          TEXT NOT NULL,
    headers      TEXT NOT NULL,
    body_sha256  TEXT NOT NULL,
    body_preview TEXT NOT NULL,
    rule         TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used', 'expired')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    decided_by   TEXT,
    decided_at   INTEGER,
    used_at      INTEGER
);
CREATE INDEX approvals_by_fingerprint ON approvals (fingerprint, created_at);
-- At most one pending ticket per exact action: two identical first calls
-- at once share it.
CREATE UNIQUE INDEX approvals_one_pending ON approvals (fingerprint) WHERE status = 'pending';
CREATE INDEX approvals_by_agent ON approvals (agent, created_at);

-- Calls a policy let through, as its sequence state counts them: written
-- with their audit record, replayed at start-up so a restart does not reset
-- triggers, counts, budgets or rates. Older than any window: pruned.
CREATE TABLE policy_events (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    user       TEXT,
    root       TEXT NOT NULL,
    agent      TEXT NOT NULL,
    grant_name TEXT NOT NULL,
    method     TEXT NOT NULL,
    path       TEXT NOT NULL,
    bytes      INTEGER NOT NULL
);
CREATE INDEX policy_events_by_time ON policy_events (at);
