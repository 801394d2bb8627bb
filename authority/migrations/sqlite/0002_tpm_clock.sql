-- Last TPM clock seen per attestation key: reset/restart counters must never go back.
CREATE TABLE tpm_clock (
    ak_name TEXT PRIMARY KEY,
    reset_count BIGINT NOT NULL,
    restart_count BIGINT NOT NULL,
    clock BIGINT NOT NULL
);
