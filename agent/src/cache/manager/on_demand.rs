//! Expansions of templated entries that a Workload API caller waits for.

use super::{Job, Manager, Target};
use crate::cache::templates::Demand;

impl Manager {
    /// Signs the expansions callers wait for (once each, however many ask),
    /// publishes, then answers every caller.
    pub(super) async fn serve(&mut self, demands: Vec<Demand>) {
        let now = self.clock.now();
        let mut jobs: Vec<Job> = Vec::new();
        for d in &demands {
            let known = self.templates.template_of(&d.key.0).is_some();
            let met = self.templates.has(&d.key, &self.entries, now);
            let queued = jobs.iter().any(|j| {
                j.entry.id == d.key.0
                    && matches!(&j.target, Target::Expansion(id) if *id == d.key.1)
            });
            if known && !met && !queued {
                if let Some(e) = self.entries.iter().find(|e| e.id == d.key.0) {
                    jobs.push(Job {
                        entry: e.clone(),
                        target: Target::Expansion(d.key.1.clone()),
                    });
                }
            }
        }
        let result = self.sign(jobs, false).await;
        self.publish();
        let now = self.clock.now();
        for d in demands {
            let answer = match &result {
                Err(e) => Err(e.to_string()),
                Ok(()) if self.templates.has(&d.key, &self.entries, now) => Ok(()),
                Ok(()) => Err(format!("no SVID for {}", d.key.1)),
            };
            let _ = d.reply.send(answer);
        }
    }
}
