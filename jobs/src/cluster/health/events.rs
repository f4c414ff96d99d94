//! The newest `Warning` event of an object: often the one line that says
//! why (`FailedMount`, `FailedCreate` from a quota, a failing probe).

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde_json::Value;
use time::OffsetDateTime;

use super::pods::timestamp;
use crate::cluster::{Cluster, ClusterError};

/// A Warning event: its reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Warning {
    pub reason: String,
    pub message: String,
}

impl Warning {
    /// `text` with the event added when the event says something `text`
    /// does not.
    pub fn added_to(&self, text: &str) -> String {
        if self.message.is_empty() || text.contains(self.message.trim()) {
            return text.to_string();
        }
        format!("{text} (event {}: {})", self.reason, self.message.trim())
    }
}

/// When an event last happened: its last timestamp, its series' last
/// observation, its event time, or when it was made.
fn last_seen(e: &Value) -> Option<OffsetDateTime> {
    timestamp(&e["lastTimestamp"])
        .or_else(|| timestamp(&e["series"]["lastObservedTime"]))
        .or_else(|| timestamp(&e["eventTime"]))
        .or_else(|| timestamp(&e["metadata"]["creationTimestamp"]))
}

impl Cluster {
    /// The newest Warning event about `kind` `ns/name`, if any.
    pub(super) async fn newest_warning(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
    ) -> Result<Option<Warning>, ClusterError> {
        let api = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            ns,
            &ApiResource::erase::<k8s_openapi::api::core::v1::Event>(&()),
        );
        let fields = format!("involvedObject.kind={kind},involvedObject.name={name}");
        let list = api.list(&ListParams::default().fields(&fields)).await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .filter(|e| e["type"] == "Warning")
            .max_by_key(last_seen)
            .map(|e| Warning {
                reason: e["reason"].as_str().unwrap_or("").to_string(),
                message: e["message"].as_str().unwrap_or("").to_string(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_added_only_when_it_says_more() {
        let w = Warning {
            reason: "BackOff".into(),
            message: "Back-off pulling image \"nginx:bad\"".into(),
        };
        let text =
            "pod web-1: container web: ImagePullBackOff: Back-off pulling image \"nginx:bad\"";
        assert_eq!(w.added_to(text), text);
        let w = Warning {
            reason: "FailedMount".into(),
            message: "MountVolume.SetUp failed".into(),
        };
        assert_eq!(
            w.added_to("pod web-1: container web: ContainerCreating"),
            "pod web-1: container web: ContainerCreating (event FailedMount: MountVolume.SetUp failed)"
        );
    }
}
