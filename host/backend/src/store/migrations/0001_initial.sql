-- Schema version 1: the registry, revocation state and audit log.
--
-- A released migration is never edited: later changes are new files appended
-- to MIGRATIONS in sqlite.rs. Times are unix seconds. Tables are STRICT so a
-- value of the wrong type is an error, not a silent conversion.

CREATE TABLE devices (
    id          TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL,
    public_key  TEXT NOT NULL,           -- PublicKey text form (ed25519:… / p256:…)
    enrolled_at INTEGER NOT NULL,
    revoked_at  INTEGER                  -- the record stays after revocation
) STRICT;

-- One-time enrolment codes. Only the SHA-256 of a code is kept; a redeemed
-- row stays (with the device it enrolled) as a record of who let it in.
CREATE TABLE invites (
    code_hash   BLOB PRIMARY KEY NOT NULL CHECK (length(code_hash) = 32),
    owner       TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    redeemed_at INTEGER,
    device_id   TEXT
) STRICT;

-- Grants hold where the secret lives (secret_source), never a secret.
CREATE TABLE grants (
    name               TEXT PRIMARY KEY NOT NULL,
    origin             TEXT NOT NULL,
    methods            TEXT NOT NULL,    -- JSON array of method names
    path_prefixes      TEXT NOT NULL,    -- JSON array
    credential         TEXT NOT NULL,    -- JSON: how the credential is attached
    secret_source      TEXT NOT NULL,    -- JSON: {"env": …} or {"file": …}
    connect_timeout_ms INTEGER NOT NULL,
    timeout_ms         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
) STRICT;

-- Live agents. The id is immutable and random; the name is unique among live
-- agents only (a deprovisioned name may be registered again, see tombstones).
CREATE TABLE agents (
    id                       TEXT PRIMARY KEY NOT NULL,
    name                     TEXT NOT NULL UNIQUE,
    owner                    TEXT NOT NULL,
    description              TEXT NOT NULL,
    limits                   TEXT NOT NULL,  -- JSON
    max_token_lifetime       INTEGER NOT NULL,
    max_instances_per_device INTEGER NOT NULL,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL,
    last_reviewed_at         INTEGER,
    last_reviewed_by         TEXT,
    generation               INTEGER NOT NULL CHECK (generation > 0)
) STRICT;

-- The agent's lists, in the order they were given. Deleting the agent
-- deletes them (ON DELETE CASCADE); devices and grants must exist.
CREATE TABLE agent_digests (
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    digest   TEXT NOT NULL,
    PRIMARY KEY (agent_id, position),
    UNIQUE (agent_id, digest)
) STRICT;

CREATE TABLE agent_devices (
    agent_id  TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    device_id TEXT NOT NULL REFERENCES devices(id),
    PRIMARY KEY (agent_id, position),
    UNIQUE (agent_id, device_id)
) STRICT;

CREATE TABLE agent_grants (
    agent_id   TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    grant_name TEXT NOT NULL REFERENCES grants(name),
    PRIMARY KEY (agent_id, position),
    UNIQUE (agent_id, grant_name)
) STRICT;
CREATE INDEX agent_grants_by_grant ON agent_grants(grant_name);

-- What is left of a deprovisioned agent: enough to never reuse a generation.
CREATE TABLE tombstones (
    name             TEXT PRIMARY KEY NOT NULL,
    agent_id         TEXT NOT NULL,
    last_generation  INTEGER NOT NULL,
    deprovisioned_at INTEGER NOT NULL
) STRICT;

-- Instances and the tokens issued to them go with their agent. The device
-- is not a foreign key: the in-process device of embedded mode is never
-- enrolled.
CREATE TABLE instances (
    instance_id TEXT PRIMARY KEY NOT NULL,
    agent_id    TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    device_id   TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
) STRICT;
CREATE INDEX instances_by_agent ON instances(agent_id);

CREATE TABLE tokens (
    jti         TEXT PRIMARY KEY NOT NULL,
    instance_id TEXT NOT NULL REFERENCES instances(instance_id) ON DELETE CASCADE,
    agent_id    TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    device_id   TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    issued_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX tokens_by_instance ON tokens(instance_id);
CREATE INDEX tokens_by_agent ON tokens(agent_id, expires_at);
CREATE INDEX tokens_by_device ON tokens(device_id);
CREATE INDEX tokens_by_expiry ON tokens(expires_at);

-- AUTOINCREMENT: a sequence number is never handed out twice, so the
-- backend can use it as a watermark.
CREATE TABLE revocations (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT NOT NULL
                      CHECK (kind IN ('token', 'instance', 'agent', 'device', 'all')),
    target            TEXT,
    before_generation INTEGER,
    at                INTEGER NOT NULL,
    revoked_by        TEXT NOT NULL,
    reason            TEXT NOT NULL,
    CHECK ((kind = 'all') = (target IS NULL)),
    CHECK (before_generation IS NULL OR kind = 'agent')
) STRICT;

-- Admin principals are people. credential_hash is the SHA-256 of a random
-- high-entropy credential.
CREATE TABLE admins (
    name            TEXT PRIMARY KEY NOT NULL,
    roles           TEXT NOT NULL,   -- JSON array of roles
    credential_hash BLOB NOT NULL UNIQUE CHECK (length(credential_hash) = 32),
    created_at      INTEGER NOT NULL
) STRICT;

-- Token signing keys. The seed is stored as given: the database file is 0600.
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY NOT NULL,
    seed       BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    retired_at INTEGER
) STRICT;

-- The hash-chained audit log. See store/audit.rs for the hash.
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    decision   TEXT NOT NULL,
    agent      TEXT,
    instance   TEXT,
    device     TEXT,
    user_name  TEXT,
    grant_name TEXT,
    method     TEXT,
    origin     TEXT,
    path       TEXT,
    reason     TEXT,
    jti        TEXT,
    admin      TEXT,
    prev_hash  BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash       BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;

-- Append-only against mistakes in our own code. Someone with write access to
-- the file can drop these triggers: the hash chain and the signed checkpoints
-- are what detect that.
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),
    hash      BLOB NOT NULL CHECK (length(hash) = 32),
    at        INTEGER NOT NULL,
    kid       TEXT NOT NULL,
    signature BLOB NOT NULL
) STRICT;
