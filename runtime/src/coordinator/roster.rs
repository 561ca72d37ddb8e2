//! The roster: the members the federation file expects (`[[members]]`), against those linked
//! and answering heartbeats. A member is *missing* when it has not linked within a grace after
//! the coordinator started, or when its session closed or its heartbeats stopped; each change
//! is reported once (`member_missing`, `member_returned`), and a node the roster does not list
//! is reported once per link (`unexpected_member`). The roster decides nothing about who may
//! take part — the consortium CA does — it makes an absence visible: an event, a webhook, a
//! metric and a line in the status.
//!
//! [`Roster::update`] is a pure function of the names present and the time, tested without
//! sockets.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::state::CoordinatorState;
use crate::events::Event;
use crate::federation::MemberSpec;
use crate::status::RosterEntry;

/// The roster and what was last reported about it.
#[derive(Debug)]
pub struct Roster {
    expected: Vec<MemberSpec>,
    /// Members reported missing (and not back since).
    missing: BTreeSet<String>,
    /// Unlisted nodes reported while they stay linked.
    unexpected: BTreeSet<String>,
    /// Nobody is missing before then (members need time to link after a start).
    grace_until: Instant,
}

/// What changed at an [`Roster::update`].
#[derive(Debug, Default, PartialEq)]
pub struct RosterChanges {
    /// Members now missing.
    pub missing: Vec<MemberSpec>,
    /// Members back.
    pub returned: Vec<String>,
    /// Unlisted nodes that linked, with their role.
    pub unexpected: Vec<(String, String)>,
}

impl Roster {
    /// A roster of `expected` members, none missing before `grace` from `now`.
    pub fn new(expected: Vec<MemberSpec>, now: Instant, grace: Duration) -> Self {
        Roster {
            expected,
            missing: BTreeSet::new(),
            unexpected: BTreeSet::new(),
            grace_until: now + grace,
        }
    }

    /// The changes, given the nodes `present` now — `(name, role)`, linked and answering.
    pub fn update(&mut self, present: &BTreeSet<(String, String)>, now: Instant) -> RosterChanges {
        let mut changes = RosterChanges::default();
        if self.expected.is_empty() {
            return changes;
        }
        let here = |m: &MemberSpec| present.contains(&(m.name.clone(), m.role.clone()));
        for m in &self.expected {
            if here(m) {
                if self.missing.remove(&m.name) {
                    changes.returned.push(m.name.clone());
                }
            } else if now >= self.grace_until && self.missing.insert(m.name.clone()) {
                changes.missing.push(m.clone());
            }
        }
        let listed = |name: &str| self.expected.iter().any(|m| m.name == name);
        self.unexpected
            .retain(|n| present.iter().any(|(p, _)| p == n));
        for (name, role) in present {
            if !listed(name) && self.unexpected.insert(name.clone()) {
                changes.unexpected.push((name.clone(), role.clone()));
            }
        }
        changes
    }

    /// Members missing now.
    pub fn missing_count(&self) -> usize {
        self.missing.len()
    }

    /// Each expected member and whether it is present, for the status.
    pub fn view(&self, present: &BTreeSet<(String, String)>) -> Vec<RosterEntry> {
        self.expected
            .iter()
            .map(|m| RosterEntry {
                name: m.name.clone(),
                region: m.region.clone(),
                role: m.role.clone(),
                present: present.contains(&(m.name.clone(), m.role.clone())),
            })
            .collect()
    }
}

/// The nodes linked and answering now, as `(name, role)`: healthy silos and linked regional
/// aggregators.
pub fn present(state: &CoordinatorState) -> BTreeSet<(String, String)> {
    let m = &state.members;
    m.silos
        .iter()
        .filter(|(_, e)| e.healthy)
        .map(|(n, _)| (n.clone(), "silo".to_string()))
        .chain(
            m.aggregators
                .keys()
                .map(|n| (n.clone(), "aggregator".to_string())),
        )
        .collect()
}

/// Compares the roster with who is present and reports what changed.
pub fn check(state: &mut CoordinatorState) {
    let here = present(state);
    let c = state.roster.update(&here, Instant::now());
    let events = &state.ledger.events;
    for m in c.missing {
        events.emit(Event::MemberMissing {
            member: m.name,
            region: m.region,
            role: m.role,
        });
    }
    for member in c.returned {
        events.emit(Event::MemberReturned { member });
    }
    for (member, role) in c.unexpected {
        events.emit(Event::UnexpectedMember { member, role });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, role: &str) -> MemberSpec {
        MemberSpec {
            name: name.into(),
            region: "eu".into(),
            role: role.into(),
        }
    }

    fn here(names: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        names
            .iter()
            .map(|(n, r)| (n.to_string(), r.to_string()))
            .collect()
    }

    #[test]
    fn absences_after_the_grace_are_reported_once_and_returns_too() {
        let t0 = Instant::now();
        let mut r = Roster::new(
            vec![
                member("bank-a", "silo"),
                member("bank-b", "silo"),
                member("agg-eu", "aggregator"),
            ],
            t0,
            Duration::from_secs(10),
        );
        let some = here(&[("bank-a", "silo")]);
        assert_eq!(
            r.update(&some, t0 + Duration::from_secs(5)),
            RosterChanges::default()
        );
        let c = r.update(&some, t0 + Duration::from_secs(10));
        let names: Vec<&str> = c.missing.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["bank-b", "agg-eu"]);
        assert_eq!(r.missing_count(), 2);
        // Reported once.
        assert!(r
            .update(&some, t0 + Duration::from_secs(20))
            .missing
            .is_empty());
        // bank-b comes back; a silo named like the aggregator does not stand in for it.
        let c = r.update(
            &here(&[("bank-a", "silo"), ("bank-b", "silo"), ("agg-eu", "silo")]),
            t0 + Duration::from_secs(30),
        );
        assert_eq!(c.returned, ["bank-b"]);
        assert_eq!(r.missing_count(), 1);
        // bank-a's heartbeats stop: missing again.
        let c = r.update(&here(&[("bank-b", "silo")]), t0 + Duration::from_secs(40));
        assert_eq!(c.missing.len(), 1);
        assert_eq!(c.missing[0].name, "bank-a");
        let view = r.view(&here(&[("bank-b", "silo")]));
        assert_eq!(
            view.iter()
                .map(|e| (e.name.as_str(), e.present))
                .collect::<Vec<_>>(),
            [("bank-a", false), ("bank-b", true), ("agg-eu", false)]
        );
    }

    #[test]
    fn an_unlisted_node_is_reported_once_per_link_and_no_roster_reports_nothing() {
        let t0 = Instant::now();
        let mut r = Roster::new(vec![member("bank-a", "silo")], t0, Duration::ZERO);
        let with_stranger = here(&[("bank-a", "silo"), ("bank-z", "silo")]);
        assert_eq!(
            r.update(&with_stranger, t0).unexpected,
            [("bank-z".to_string(), "silo".to_string())]
        );
        assert!(r.update(&with_stranger, t0).unexpected.is_empty());
        r.update(&here(&[("bank-a", "silo")]), t0);
        assert_eq!(
            r.update(&with_stranger, t0).unexpected.len(),
            1,
            "linked again"
        );
        let mut none = Roster::new(vec![], t0, Duration::ZERO);
        assert_eq!(none.update(&with_stranger, t0), RosterChanges::default());
    }
}
