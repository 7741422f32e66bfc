-- What the backend does with secret-like data in a guest's outbound request,
-- per grant: 'block' (default), 'redact' or 'audit'.
ALTER TABLE grants ADD COLUMN outbound_secrets TEXT NOT NULL DEFAULT 'block'
    CHECK (outbound_secrets IN ('block', 'redact', 'audit'));
