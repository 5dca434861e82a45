//! A teardown that does not end. An executor pod deleted gracefully is gone once its kubelet
//! confirms that its containers stopped; on a lost node nobody confirms, and the pod stays
//! `Terminating` for ever. A pod still there [`STUCK_MARGIN_SECONDS`] after its deletion
//! deadline (deletion time plus grace period), or [`READY_NODE_PATIENCE_SECONDS`] when its node
//! is Ready, is stuck: the job shows it (`Stalled=True`,
//! reason `TeardownStuck`, naming pod and node). When the pod's node is lost (the Node is gone,
//! tainted `node.kubernetes.io/out-of-service`, or not Ready for [`NODE_LOST_AFTER_SECONDS`]),
//! the pod is force-deleted (grace period 0), as the pod garbage collector would for an
//! out-of-service node. The risk, documented in docs/resilience.md: if the node is in fact
//! still running the containers (a network partition), they run on until the node returns,
//! while the job is already `cancelled`.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::clock;
use super::model::{NodeView, ObservedPod};

/// Seconds past its deletion deadline after which a terminating pod counts as stuck, unless its
/// node is known to be Ready.
pub const STUCK_MARGIN_SECONDS: i64 = 30;
/// Seconds past its deletion deadline after which a terminating pod on a Ready node counts as
/// stuck: a live kubelet working through a backlog of deletions (thousands of jobs cancelled at
/// once) is slow, not stuck, and gets the patience of Kubernetes' default eviction timeout.
pub const READY_NODE_PATIENCE_SECONDS: i64 = 300;
/// Seconds a node may be not Ready before its stuck pods are force-deleted.
pub const NODE_LOST_AFTER_SECONDS: i64 = 300;
/// How often a stuck teardown is looked at (its node is read again).
pub const STUCK_POLL: Duration = Duration::from_secs(10);
/// The taint that declares a node out of service (Kubernetes' non-graceful node shutdown).
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// A teardown, judged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Judgement {
    /// One line per stuck pod (pod, node, how long past its deadline).
    pub stuck: Vec<String>,
    /// Stuck pods to force-delete, with why.
    pub force_delete: Vec<(String, String)>,
    /// When to look again (a pod's deadline plus the margin, or a stuck pod's node); None when
    /// no pod is terminating.
    pub next_look: Option<Duration>,
}

/// The pods being deleted that are still there [`STUCK_MARGIN_SECONDS`] past their deadline:
/// those that may be stuck, whose nodes [`judge`] needs to know.
pub fn stuck(pods: &[ObservedPod], now: Timestamp) -> Vec<&ObservedPod> {
    pods.iter()
        .filter(|p| p.terminating)
        .filter(|p| {
            p.deletion_deadline
                .is_some_and(|d| clock::after(d, STUCK_MARGIN_SECONDS) <= now)
        })
        .collect()
}

/// Judges the teardown of `pods`, given what is known of the stuck pods' nodes.
pub fn judge(
    pods: &[ObservedPod],
    nodes: &BTreeMap<String, NodeView>,
    now: Timestamp,
) -> Judgement {
    let stuck = stuck(pods, now);
    let mut judgement = Judgement {
        next_look: pods
            .iter()
            .filter(|p| p.terminating)
            .filter_map(|p| p.deletion_deadline)
            .map(|d| clock::duration_until(now, clock::after(d, STUCK_MARGIN_SECONDS)))
            .min(),
        ..Judgement::default()
    };
    for pod in &stuck {
        let node = pod.node.as_deref().unwrap_or("(none)");
        let deadline = pod.deletion_deadline.unwrap_or(now);
        let margin = match nodes.get(node) {
            Some(NodeView::Present {
                not_ready_since: None,
                out_of_service: false,
            }) => READY_NODE_PATIENCE_SECONDS,
            _ => STUCK_MARGIN_SECONDS,
        };
        if clock::after(deadline, margin) > now {
            // A Ready node's kubelet may still be working through its deletions.
            judgement.next_look = Some(STUCK_POLL);
            continue;
        }
        // No running count in the text: an unchanged teardown shows an unchanged message, so
        // the passes that watch it write nothing new.
        judgement.stuck.push(format!(
            "executor pod {} on node {node} is still terminating over {margin} s after its grace period ended ({deadline})",
            pod.name
        ));
        let lost = pod
            .node
            .as_deref()
            .and_then(|n| Some((n, nodes.get(n)?)))
            .and_then(|(n, view)| node_lost(n, view, now));
        if let Some(why) = lost {
            judgement.force_delete.push((pod.name.clone(), why));
        }
    }
    if !judgement.stuck.is_empty() {
        judgement.next_look = Some(STUCK_POLL);
    }
    judgement
}

/// Why a node counts as lost, if it does.
fn node_lost(name: &str, node: &NodeView, now: Timestamp) -> Option<String> {
    match node {
        NodeView::Gone => Some(format!("node {name} no longer exists")),
        NodeView::Present {
            out_of_service: true,
            ..
        } => Some(format!("node {name} is tainted {OUT_OF_SERVICE_TAINT}")),
        NodeView::Present {
            not_ready_since: Some(since),
            ..
        } if clock::after(*since, NODE_LOST_AFTER_SECONDS) <= now => Some(format!(
            "node {name} has not been Ready since {since} (over {NODE_LOST_AFTER_SECONDS} s)"
        )),
        NodeView::Present { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::PodPhase;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid time")
    }

    fn terminating(name: &str, deadline: i64, node: &str) -> ObservedPod {
        ObservedPod {
            terminating: true,
            deletion_deadline: Some(at(deadline)),
            node: Some(node.to_string()),
            ..ObservedPod::new(name, PodPhase::Running)
        }
    }

    fn ready() -> NodeView {
        NodeView::Present {
            not_ready_since: None,
            out_of_service: false,
        }
    }

    #[test]
    fn a_pod_within_its_grace_period_and_margin_is_not_stuck_and_is_looked_at_after_it() {
        let pods = [terminating("p", 10, "n")];
        let judged = judge(&pods, &BTreeMap::new(), at(0));
        assert!(judged.stuck.is_empty() && judged.force_delete.is_empty());
        assert_eq!(judged.next_look, Some(Duration::from_secs(41)));
    }

    #[test]
    fn a_pod_on_a_ready_node_gets_patience_then_is_shown_stuck_but_not_force_deleted() {
        let pods = [terminating("p", 0, "n")];
        let nodes = BTreeMap::from([("n".to_string(), ready())]);
        let slow = judge(&pods, &nodes, at(299));
        assert!(
            slow.stuck.is_empty() && slow.force_delete.is_empty(),
            "{slow:?}"
        );
        assert_eq!(slow.next_look, Some(STUCK_POLL), "its node is read again");
        let judged = judge(&pods, &nodes, at(300));
        assert_eq!(
            judged.stuck,
            [format!(
                "executor pod p on node n is still terminating over 300 s after its grace period ended ({})",
                at(0)
            )]
        );
        assert!(judged.force_delete.is_empty());
        assert_eq!(judged.next_look, Some(STUCK_POLL));
    }

    #[test]
    fn a_pod_on_a_node_not_ready_or_unknown_is_stuck_after_the_margin() {
        let pods = [terminating("p", 0, "n")];
        let not_ready = NodeView::Present {
            not_ready_since: Some(at(-10)),
            out_of_service: false,
        };
        for nodes in [
            BTreeMap::new(),
            BTreeMap::from([("n".to_string(), not_ready)]),
        ] {
            let judged = judge(&pods, &nodes, at(30));
            assert_eq!(judged.stuck.len(), 1, "{nodes:?}");
            assert!(judged.stuck[0].contains("over 30 s"), "{:?}", judged.stuck);
        }
    }

    #[test]
    fn a_stuck_pod_on_a_lost_node_is_force_deleted() {
        let pods = [terminating("p", 0, "n")];
        let lost = [
            (NodeView::Gone, "node n no longer exists"),
            (
                NodeView::Present {
                    not_ready_since: None,
                    out_of_service: true,
                },
                "node n is tainted node.kubernetes.io/out-of-service",
            ),
            (
                NodeView::Present {
                    not_ready_since: Some(at(-300)),
                    out_of_service: false,
                },
                "has not been Ready since",
            ),
        ];
        for (view, why) in lost {
            let nodes = BTreeMap::from([("n".to_string(), view)]);
            let judged = judge(&pods, &nodes, at(30));
            assert_eq!(judged.force_delete.len(), 1, "{why}");
            assert!(
                judged.force_delete[0].1.contains(why),
                "{:?}",
                judged.force_delete
            );
        }
    }

    #[test]
    fn a_node_not_ready_for_less_than_the_timeout_or_unknown_keeps_its_pod() {
        let pods = [terminating("p", 0, "n")];
        let recent = BTreeMap::from([(
            "n".to_string(),
            NodeView::Present {
                not_ready_since: Some(at(-100)),
                out_of_service: false,
            },
        )]);
        assert!(judge(&pods, &recent, at(60)).force_delete.is_empty());
        assert!(
            judge(&pods, &BTreeMap::new(), at(60))
                .force_delete
                .is_empty()
        );
    }
}
