//! Publishing Kubernetes Events (`events.k8s.io/v1`): one create per event, nothing kept.
//!
//! kube-runtime's `Recorder` keeps every event it published for six minutes to count repeats
//! into a series, and sweeps that whole table on each publish under one lock. The operator
//! publishes an event only when something changed (a state change, an ignored request, a
//! condition first shown), so repeats are rare and a series buys nothing; at thousands of jobs
//! the table cost memory (one full Event per publish) and CPU (a sweep per publish, serialising
//! every reconcile that publishes). [`Publisher`] keeps nothing, and [`Publisher::emit`] does not
//! make a reconcile wait for its events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{debug, warn};

use crate::domain::EventKind;

/// One event to publish about an object.
#[derive(Clone, Debug)]
pub struct Note<'a> {
    pub kind: EventKind,
    /// A CamelCase reason.
    pub reason: &'a str,
    /// What the operator did (`Reconcile`, `Decode`).
    pub action: &'a str,
    /// The message; cut to [`MAX_NOTE_BYTES`].
    pub message: &'a str,
}

/// The API server rejects notes over 1 kB.
pub const MAX_NOTE_BYTES: usize = 1000;

/// Creates events as this operator (reportingController) and instance.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    controller: String,
    instance: String,
    /// The stamps in event names.
    stamps: Arc<Stamps>,
}

impl Publisher {
    /// A publisher reporting as `controller` (and `instance`, or the controller's name).
    pub fn new(client: Client, controller: &str, instance: Option<&str>) -> Self {
        Publisher {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or(controller).to_string(),
            stamps: Arc::default(),
        }
    }

    /// Creates one event regarding `regarding`, and waits for the API server's answer.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        note: &Note<'_>,
    ) -> Result<(), kube::Error> {
        self.create(self.event(regarding, note)).await
    }

    /// Creates the events regarding `regarding` in the background, in order, and returns at
    /// once: a reconcile does not wait for them (as the Job controller's event broadcaster does
    /// not). Their times are taken now. A failure is logged, never fatal.
    pub fn emit(&self, regarding: &ObjectReference, notes: &[Note<'_>]) {
        if notes.is_empty() {
            return;
        }
        let events: Vec<Event> = notes.iter().map(|n| self.event(regarding, n)).collect();
        for note in notes {
            debug!(object = ?regarding.name, reason = note.reason, "event");
        }
        let publisher = self.clone();
        tokio::spawn(async move {
            for event in events {
                let (object, reason) = (event_object(&event), event.reason.clone());
                if let Err(error) = publisher.create(event).await {
                    warn!(%object, reason = reason.as_deref().unwrap_or(""), %error, "failed to publish event");
                }
            }
        });
    }

    /// The event `note` regarding `regarding`, timed now: what [`Publisher::publish`] creates.
    pub fn event(&self, regarding: &ObjectReference, note: &Note<'_>) -> Event {
        let now = jiff::Timestamp::now();
        let stamp = self
            .stamps
            .next(u64::try_from(now.as_nanosecond()).unwrap_or_default());
        Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{stamp:x}",
                    regarding.name.as_deref().unwrap_or(&self.controller)
                )),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            action: Some(note.action.to_string()),
            reason: Some(note.reason.to_string()),
            note: Some(truncate(note.message)),
            type_: Some(
                match note.kind {
                    EventKind::Normal => "Normal",
                    EventKind::Warning => "Warning",
                }
                .to_string(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }

    async fn create(&self, event: Event) -> Result<(), kube::Error> {
        let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
        Api::<Event>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(drop)
    }
}

/// `namespace/name` of the object an event regards.
fn event_object(event: &Event) -> String {
    let regarding = event.regarding.as_ref();
    format!(
        "{}/{}",
        regarding.and_then(|r| r.namespace.as_deref()).unwrap_or(""),
        regarding.and_then(|r| r.name.as_deref()).unwrap_or("")
    )
}

/// Event name stamps: the time in nanoseconds, strictly increasing in this process, so two
/// events about one object never get the same name.
#[derive(Debug, Default)]
struct Stamps(AtomicU64);

impl Stamps {
    /// `nanos`, or one past the last stamp if that is not earlier.
    fn next(&self, nanos: u64) -> u64 {
        let previous = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(nanos.max(last.saturating_add(1)))
            })
            .unwrap_or_else(|last| last);
        nanos.max(previous.saturating_add(1))
    }
}

/// `message`, cut at a character boundary to at most [`MAX_NOTE_BYTES`] with "..." appended.
pub fn truncate(message: &str) -> String {
    if message.len() <= MAX_NOTE_BYTES {
        return message.to_string();
    }
    let mut end = MAX_NOTE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_at_a_character_boundary() {
        let message = "é".repeat(800);
        let cut = truncate(&message);
        assert!(
            cut.ends_with("...") && cut.len() <= MAX_NOTE_BYTES + 3,
            "{}",
            cut.len()
        );
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn stamps_are_unique_within_one_nanosecond_and_follow_the_clock() {
        let stamps = Stamps::default();
        assert_eq!(stamps.next(100), 100);
        assert_eq!(stamps.next(100), 101);
        assert_eq!(stamps.next(50), 102);
        assert_eq!(stamps.next(500), 500);
    }
}
