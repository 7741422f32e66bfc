-- Per-user credentials of a grant: a JSON object from user principal
-- (user:<issuer>/<sub>) to secret source. Sources only, never secrets.
ALTER TABLE grants ADD COLUMN user_secrets TEXT NOT NULL DEFAULT '{}';
