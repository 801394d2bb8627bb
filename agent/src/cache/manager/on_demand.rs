//! Expansions of templated entries that a Workload API caller waits for.

use super::{Due, Job, Manager};
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
            let queued = jobs
                .iter()
                .any(|j| j.entry.id == d.key.0 && j.expansion.as_ref() == Some(&d.key.1));
            if known && !met && !queued {
                if let Some(e) = self.entries.iter().find(|e| e.id == d.key.0) {
                    jobs.push(Job {
                        entry: e.clone(),
                        expansion: Some(d.key.1.clone()),
                    });
                }
            }
        }
        let result = self
            .sign(
                jobs.into_iter().map(|j| Due::Job(Box::new(j))).collect(),
                false,
            )
            .await;
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
