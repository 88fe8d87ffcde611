//! Bulk egress: the bytes one person sends, within a rule's window, over TCP connections to
//! destinations outside the rule's internal networks. Counted from each connection's close
//! event (its acknowledged bytes); loopback is never egress.
use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use custos_proto::v1::{Identity, NetworkConnection, NetworkOperation};
use ipnet::IpNet;

use crate::config::AlertRule;

/// Distinct (rule, person) pairs tracked before the oldest state is dropped.
const MAX_KEYS: usize = 10_000;
/// Destinations named in an alert.
const MAX_DESTINATIONS: usize = 100;

struct Window {
    start: Instant,
    bytes: u64,
    destinations: BTreeSet<String>,
    fired: bool,
}

/// What a rule's threshold crossing reports.
pub struct Crossing {
    pub bytes: u64,
    pub destinations: Vec<String>,
}

#[derive(Default)]
pub struct EgressCounter {
    /// Each rule's internal networks, parsed (validation has checked them).
    internal: Vec<Vec<IpNet>>,
    windows: HashMap<(usize, u32), Window>,
}

impl EgressCounter {
    pub fn new(rules: &[AlertRule]) -> Self {
        let internal = rules
            .iter()
            .map(|rule| {
                let parsed = rule.internal_networks.iter().map(|n| n.parse());
                parsed.filter_map(Result::ok).collect()
            })
            .collect();
        Self {
            internal,
            windows: HashMap::new(),
        }
    }

    /// Counts a connection's end for rule `index`; the window's total and destinations the
    /// first time the person goes over the threshold in a window.
    pub fn count(
        &mut self,
        index: usize,
        rule: &AlertRule,
        identity: &Identity,
        connection: &NetworkConnection,
    ) -> Option<Crossing> {
        let limit = rule.egress_bytes?;
        if connection.operation() != NetworkOperation::Close || connection.bytes_sent == 0 {
            return None;
        }
        let peer = plain_address(connection.remote_address.parse().ok()?);
        if peer.is_loopback() || self.internal[index].iter().any(|net| net.contains(&peer)) {
            return None;
        }
        if self.windows.len() >= MAX_KEYS {
            self.windows.clear();
        }
        let who = identity.login_uid.unwrap_or(identity.uid);
        let window_length = Duration::from_secs(rule.egress_minutes * 60);
        let window = self.windows.entry((index, who)).or_insert_with(fresh);
        if window.start.elapsed() >= window_length {
            *window = fresh();
        }
        window.bytes += connection.bytes_sent;
        if window.destinations.len() < MAX_DESTINATIONS {
            let destination = match peer {
                IpAddr::V6(_) => format!("[{peer}]:{}", connection.remote_port),
                IpAddr::V4(_) => format!("{peer}:{}", connection.remote_port),
            };
            window.destinations.insert(destination);
        }
        if window.bytes <= limit || window.fired {
            return None;
        }
        window.fired = true;
        Some(Crossing {
            bytes: window.bytes,
            destinations: window.destinations.iter().cloned().collect(),
        })
    }
}

/// An IPv4 peer of a dual-stack socket (`::ffff:a.b.c.d`) as the IPv4 address it is, so that
/// IPv4 networks and loopback match it.
fn plain_address(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    }
}

fn fresh() -> Window {
    Window {
        start: Instant::now(),
        bytes: 0,
        destinations: BTreeSet::new(),
        fired: false,
    }
}

#[cfg(test)]
mod tests {
    use custos_proto::v1::{event::Body, Alert, AlertReason, Event};

    use super::super::AlertEngine;
    use super::*;
    use crate::config::{AccessKind, Severity};

    fn rule() -> AlertRule {
        AlertRule {
            id: "egress".into(),
            severity: Severity::High,
            paths: vec![],
            programs: vec![],
            removable_writes: false,
            allow_roles: vec![],
            allow_groups: vec![],
            access: AccessKind::Any,
            bulk_files: None,
            bulk_minutes: 10,
            egress_bytes: Some(1000),
            egress_minutes: 10,
            internal_networks: vec!["10.0.0.0/8".into()],
        }
    }

    fn close(login_uid: u32, peer: &str, bytes_sent: u64) -> Event {
        Event {
            identity: Some(Box::new(Identity {
                uid: login_uid,
                login_uid: Some(login_uid),
                ..Identity::default()
            })),
            body: Some(Body::Network(NetworkConnection {
                operation: NetworkOperation::Close as i32,
                remote_address: peer.into(),
                remote_port: 443,
                bytes_sent,
                ..NetworkConnection::default()
            })),
            ..Event::default()
        }
    }

    fn bulk_egress(alerts: &[Event]) -> Vec<&Alert> {
        alerts
            .iter()
            .filter_map(|e| match &e.body {
                Some(Body::Alert(a)) if a.reason() == AlertReason::BulkEgress => Some(a),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_person_over_the_threshold_outside_internal_networks_alerts_once() {
        let mut engine = AlertEngine::new(vec![rule()]);
        assert!(engine.evaluate(&close(1000, "192.0.2.1", 600)).is_empty());
        // Internal, loopback and another person's bytes do not add up.
        assert!(engine.evaluate(&close(1000, "10.1.2.3", 5000)).is_empty());
        assert!(engine.evaluate(&close(1000, "127.0.0.1", 5000)).is_empty());
        // A dual-stack socket's IPv4 peers are IPv4 peers.
        assert!(engine
            .evaluate(&close(1000, "::ffff:10.9.9.9", 5000))
            .is_empty());
        assert!(engine
            .evaluate(&close(1000, "::ffff:127.0.0.1", 5000))
            .is_empty());
        assert!(engine.evaluate(&close(1001, "192.0.2.1", 600)).is_empty());
        let alerts = engine.evaluate(&close(1000, "2001:db8::1", 600));
        let alert = bulk_egress(&alerts);
        assert_eq!(alert.len(), 1);
        assert_eq!(alert[0].bytes, 1200);
        assert_eq!(
            alert[0].destinations,
            vec!["192.0.2.1:443".to_owned(), "[2001:db8::1]:443".to_owned()]
        );
        assert!(engine.evaluate(&close(1000, "192.0.2.1", 600)).is_empty());
    }
}
