//! The last TPM clock seen per AK. A quote whose reset or restart counter
//! went back is a replay of an old quote or a rolled-back TPM.

use sqlx::Row;

use super::{Datastore, DatastoreError};

/// TPMS_CLOCK_INFO values as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TpmClock {
    pub reset_count: i64,
    pub restart_count: i64,
    pub clock: i64,
}

impl TpmClock {
    /// Strictly after `prev`: a later boot, a later resume, or a later tick.
    fn follows(&self, prev: &TpmClock) -> bool {
        (self.reset_count, self.restart_count, self.clock)
            > (prev.reset_count, prev.restart_count, prev.clock)
            && self.reset_count >= prev.reset_count
            && (self.reset_count > prev.reset_count || self.restart_count >= prev.restart_count)
    }
}

impl Datastore {
    /// Records `now` for `ak_name` if it follows the stored value; false (and
    /// nothing written) if it does not.
    pub async fn advance_tpm_clock(
        &self,
        ak_name: &str,
        now: TpmClock,
    ) -> Result<bool, DatastoreError> {
        let _t = self.timer("advance_tpm_clock");
        let mut tx = self.pool.begin().await?;
        let prev = sqlx::query(
            "SELECT reset_count, restart_count, clock FROM tpm_clock WHERE ak_name = $1",
        )
        .bind(ak_name)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = prev {
            let prev = TpmClock {
                reset_count: r.try_get(0)?,
                restart_count: r.try_get(1)?,
                clock: r.try_get(2)?,
            };
            if !now.follows(&prev) {
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO tpm_clock (ak_name, reset_count, restart_count, clock) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (ak_name) DO UPDATE SET reset_count = excluded.reset_count, \
             restart_count = excluded.restart_count, clock = excluded.clock",
        )
        .bind(ak_name)
        .bind(now.reset_count)
        .bind(now.restart_count)
        .bind(now.clock)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(reset: i64, restart: i64, clock: i64) -> TpmClock {
        TpmClock {
            reset_count: reset,
            restart_count: restart,
            clock,
        }
    }

    #[test]
    fn counters_never_go_back() {
        let prev = c(3, 1, 1000);
        assert!(c(3, 1, 1001).follows(&prev));
        assert!(
            c(3, 2, 10).follows(&prev),
            "resume: restart up, clock may be lower"
        );
        assert!(
            c(4, 0, 5).follows(&prev),
            "reboot: reset up, restart back to 0"
        );
        assert!(!c(3, 1, 1000).follows(&prev), "the same quote again");
        assert!(!c(2, 9, 9999).follows(&prev));
        assert!(!c(3, 0, 9999).follows(&prev));
    }

    #[tokio::test]
    async fn stored_per_ak_and_refuses_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open_sqlite(&dir.path().join("db"))
            .await
            .unwrap();
        assert!(ds.advance_tpm_clock("ak1", c(3, 1, 1000)).await.unwrap());
        assert!(ds.advance_tpm_clock("ak2", c(1, 0, 5)).await.unwrap());
        assert!(!ds.advance_tpm_clock("ak1", c(3, 1, 1000)).await.unwrap());
        assert!(!ds.advance_tpm_clock("ak1", c(2, 1, 2000)).await.unwrap());
        assert!(ds.advance_tpm_clock("ak1", c(3, 1, 1500)).await.unwrap());
        assert!(
            !ds.advance_tpm_clock("ak1", c(3, 1, 1200)).await.unwrap(),
            "compared with the latest"
        );
    }
}
