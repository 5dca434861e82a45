//! `completed`, `cancelled`, `failed`: nothing changes any more. A cancel request is ignored
//! (with one event per generation), pods that still run are released, and the TTL deletes the
//! DataJob.

use super::{Step, after_seconds, duration_until, reason_suffix};
use crate::api::JobState;
use crate::domain::model::{EventKind, Reason};

impl Step<'_> {
    pub(super) fn finished(&mut self, state: JobState) {
        let spec = &self.obs.spec;
        let new_generation = self.obs.status.observed_generation != Some(self.obs.generation);
        if spec.cancel && new_generation {
            let message = format!(
                "cancellation ignored: the job already finished as {state}{}",
                reason_suffix(spec.cancel_reason.as_deref())
            );
            self.event(EventKind::Normal, Reason::CancellationIgnored, message);
        }
        // Completed and failed jobs give back what still runs; finished pods stay for logs.
        self.release_running_pods();
        if let (Some(ttl), Some(done)) =
            (spec.ttl_seconds_after_finished, &self.status.completed_at)
        {
            let expires = after_seconds(done.0, i64::from(ttl));
            if self.obs.now >= expires {
                self.delete_job = true;
            } else {
                self.requeue = Some(duration_until(self.obs.now, expires));
            }
        }
    }
}
