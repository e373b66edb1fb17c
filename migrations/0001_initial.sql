-- tusker metadata schema (PostgreSQL backend). Mirrors the sled trees:
-- uploads (with the expiry index and the post-finish outbox as partial
-- indexes), tombstones, concatenation waiters, destinations, and the
-- per-upload leases that give one writer per upload across instances.

CREATE TABLE uploads (
    id                  TEXT PRIMARY KEY,
    -- The whole UploadInfo as JSON (offset, part list, staged tail, ...).
    info                JSONB NOT NULL,
    -- Unix seconds; NULL when finished or never expiring.
    expires_at          BIGINT,
    -- A post-finish hook is owed (the outbox).
    finish_hook_pending BOOLEAN NOT NULL DEFAULT FALSE,
    -- Until when one instance has claimed delivery of the owed hook.
    hook_claimed_until  TIMESTAMPTZ,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX uploads_expiry ON uploads (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX uploads_outbox ON uploads (id) WHERE finish_hook_pending;

CREATE TABLE tombstones (
    id         TEXT PRIMARY KEY,
    -- Unix seconds.
    removed_at BIGINT NOT NULL
);

CREATE INDEX tombstones_removed_at ON tombstones (removed_at);

CREATE TABLE concat_waiters (
    partial_id TEXT NOT NULL,
    final_id   TEXT NOT NULL,
    PRIMARY KEY (partial_id, final_id)
);

CREATE TABLE destinations (
    destination TEXT PRIMARY KEY,
    upload_id   TEXT NOT NULL
);

CREATE TABLE leases (
    upload_id    TEXT PRIMARY KEY,
    -- Instance id of the holder (random per process start).
    holder       TEXT NOT NULL,
    -- Per-acquisition token: release and renewal only touch their own lease.
    token        TEXT NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX leases_expires_at ON leases (expires_at);
