//! The last TPM clock seen per TPM (EK hash), whatever AK quoted it: a new AK
//! must not wipe the history. A quote whose clock or counters went back is a
//! replay of an old quote or a rolled-back TPM; a new reset count (a reboot)
//! means new boot measurements, so it is taken only with an event log that
//! replayed against this quote.

use sqlx::Row;

use super::{Datastore, DatastoreError};

/// TPMS_CLOCK_INFO values as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TpmClock {
    pub reset_count: i64,
    pub restart_count: i64,
    pub clock: i64,
}

/// What [`Datastore::advance_tpm_clock`] made of a quote's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockCheck {
    /// Recorded as the TPM's latest clock.
    Advanced,
    /// Not after the last one seen: refused, nothing written.
    WentBack,
    /// A reboot without an event log to show what booted: refused, nothing written.
    RebootWithoutLog,
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
    /// Records `now` for the TPM `ek_hash` if it follows the stored value and, when
    /// the reset count changed, `event_log` (a non-empty log replayed against this
    /// quote) is true. Check and write are one transaction.
    pub async fn advance_tpm_clock(
        &self,
        ek_hash: &str,
        now: TpmClock,
        event_log: bool,
    ) -> Result<ClockCheck, DatastoreError> {
        let _t = self.timer("advance_tpm_clock");
        let mut tx = self.pool.begin().await?;
        let prev = sqlx::query(
            "SELECT reset_count, restart_count, clock FROM tpm_clock WHERE ek_hash = $1",
        )
        .bind(ek_hash)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = prev {
            let prev = TpmClock {
                reset_count: r.try_get(0)?,
                restart_count: r.try_get(1)?,
                clock: r.try_get(2)?,
            };
            if !now.follows(&prev) {
                return Ok(ClockCheck::WentBack);
            }
            if now.reset_count != prev.reset_count && !event_log {
                return Ok(ClockCheck::RebootWithoutLog);
            }
        }
        sqlx::query(
            "INSERT INTO tpm_clock (ek_hash, reset_count, restart_count, clock) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (ek_hash) DO UPDATE SET reset_count = excluded.reset_count, \
             restart_count = excluded.restart_count, clock = excluded.clock",
        )
        .bind(ek_hash)
        .bind(now.reset_count)
        .bind(now.restart_count)
        .bind(now.clock)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ClockCheck::Advanced)
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
    async fn stored_per_tpm_and_refuses_rollback() {
        use ClockCheck::*;
        let dir = tempfile::tempdir().unwrap();
        let ds = Datastore::open_sqlite(&dir.path().join("db"))
            .await
            .unwrap();
        let adv = |ek: &'static str, t: TpmClock, log: bool| {
            let ds = ds.clone();
            async move { ds.advance_tpm_clock(ek, t, log).await.unwrap() }
        };
        assert_eq!(adv("ek1", c(3, 1, 1000), false).await, Advanced);
        assert_eq!(adv("ek2", c(1, 0, 5), false).await, Advanced);
        assert_eq!(adv("ek1", c(3, 1, 1000), true).await, WentBack);
        assert_eq!(adv("ek1", c(2, 1, 2000), true).await, WentBack);
        assert_eq!(adv("ek1", c(3, 1, 1500), false).await, Advanced);
        assert_eq!(
            adv("ek1", c(3, 1, 1200), true).await,
            WentBack,
            "compared with the latest"
        );
        assert_eq!(adv("ek1", c(3, 2, 10), false).await, Advanced, "resume");
        assert_eq!(adv("ek1", c(4, 0, 5), false).await, RebootWithoutLog);
        assert_eq!(
            adv("ek1", c(3, 2, 20), false).await,
            Advanced,
            "the refused reboot was not recorded"
        );
        assert_eq!(adv("ek1", c(4, 0, 5), true).await, Advanced);
        assert_eq!(adv("ek1", c(4, 0, 6), false).await, Advanced, "same boot");
    }
}
