-- API tokens, browser sessions, and who created each run.
--
-- Secrets are never stored: `hash` is the hex SHA-256 of a token's or a session's secret.
-- Revoking a token keeps its row (runs name their creator) and deletes its sessions.

CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
    hash        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    revoked_at  TEXT
);

CREATE TABLE sessions (
    hash        TEXT PRIMARY KEY,
    token_id    INTEGER NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    expires_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_token ON sessions (token_id);

ALTER TABLE runs ADD COLUMN created_by TEXT;
