-- The agent SVID issued before the current one: still accepted until the agent
-- presents the current one (renewal overlap), then cleared. NULL: none.
ALTER TABLE agents ADD COLUMN prev_serial TEXT;

-- TPM clock history per TPM (EK hash), not per AK: a new AK must not reset it.
-- History kept per AK cannot be attributed to a TPM, so it starts afresh.
DROP TABLE tpm_clock;
CREATE TABLE tpm_clock (
    ek_hash       TEXT PRIMARY KEY,
    reset_count   BIGINT NOT NULL,
    restart_count BIGINT NOT NULL,
    clock         BIGINT NOT NULL
);
