-- Registration entries. selectors/dns_names are JSON arrays; selectors_key is the
-- SHA-256 of the sorted, deduplicated selectors, so the unique index treats the
-- selectors as a set and stays small enough for any engine's index row limit.
CREATE TABLE entries (
    id            TEXT PRIMARY KEY,
    spiffe_id     TEXT NOT NULL,
    parent_id     TEXT NOT NULL,
    selectors     TEXT NOT NULL,
    selectors_key TEXT NOT NULL,
    x509_ttl      BIGINT,
    jwt_ttl       BIGINT,
    dns_names     TEXT NOT NULL,
    hint          TEXT NOT NULL,
    admin         BIGINT NOT NULL,
    expires_at    BIGINT,
    revision      BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX entries_identity ON entries (parent_id, spiffe_id, selectors_key);
CREATE INDEX entries_created ON entries (created_at, id);

-- Change counters bumped in the same transaction as the change they count.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('entries', 0);

-- Join tokens are stored as SHA-256 hex: a copy of the database does not hand out
-- unused tokens.
CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX join_tokens_expiry ON join_tokens (expires_at);

CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    method      TEXT NOT NULL,
    selectors   TEXT NOT NULL,
    serial      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    attested_at BIGINT NOT NULL,
    evicted     BIGINT NOT NULL DEFAULT 0
);

-- AUTOINCREMENT: audit IDs are never reused, even after old rows are pruned.
CREATE TABLE audit (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_time     BIGINT NOT NULL,
    kind           TEXT NOT NULL,
    agent_id       TEXT NOT NULL,
    node_selectors TEXT NOT NULL,
    entry_id       TEXT NOT NULL,
    spiffe_id      TEXT NOT NULL,
    serial         TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    audience       TEXT NOT NULL,
    detail         TEXT NOT NULL
);
CREATE INDEX audit_time ON audit (event_time, id);
CREATE INDEX audit_spiffe ON audit (spiffe_id, event_time, id);
CREATE INDEX audit_agent ON audit (agent_id, event_time, id);
