//! What the silos themselves reported, for the governance report: the versions they run,
//! the deployment orders they confirmed or refused, their regions and the roster's attendance.
//! The journal does not hold these; `events.jsonl` does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::governance::{RosterMember, RosterReport};
use crate::federation::MemberSpec;

/// Each silo's last reported deployed version (events.jsonl).
pub(super) fn deployed_versions(events: &[Value]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "silo_deployed") {
        if let (Some(s), Some(v)) = (e["silo"].as_str(), e["version"].as_u64()) {
            out.insert(s.to_string(), v);
        }
    }
    out
}

pub(super) fn confirmations(events: &[Value], id: u64) -> Vec<String> {
    let set: BTreeSet<String> = events
        .iter()
        .filter(|e| e["event"] == "silo_deployed" && e["deployment"].as_u64() == Some(id))
        .filter_map(|e| e["silo"].as_str().map(str::to_string))
        .collect();
    set.into_iter().collect()
}

/// Refusals of order `id` (events before orders carried their id: by version).
pub(super) fn refusals_of(events: &[Value], id: u64, version: u64) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| {
            e["event"] == "deployment_refused"
                && match e["deployment"].as_u64() {
                    Some(d) => d == id,
                    None => e["version"].as_u64() == Some(version),
                }
        })
        .filter_map(|e| {
            Some((
                e["silo"].as_str()?.to_string(),
                e["reason"].as_str()?.to_string(),
            ))
        })
        .collect()
}

pub(super) fn regions(events: &[Value], roster: Option<&[MemberSpec]>) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = roster
        .unwrap_or_default()
        .iter()
        .map(|m| (m.name.clone(), m.region.clone()))
        .collect();
    for e in events.iter().filter(|e| e["event"] == "silo_joined") {
        if let (Some(s), Some(r)) = (e["silo"].as_str(), e["region"].as_str()) {
            out.entry(s.to_string()).or_insert_with(|| r.to_string());
        }
    }
    out
}

pub(super) fn roster(events: &[Value], roster: Option<&[MemberSpec]>) -> RosterReport {
    let mut members: Vec<RosterMember> = match roster {
        Some(r) => r
            .iter()
            .map(|m| RosterMember {
                name: m.name.clone(),
                region: m.region.clone(),
                role: m.role.clone(),
                missing_reports: 0,
                last_seen: "never seen",
            })
            .collect(),
        None => vec![],
    };
    let mut unexpected = BTreeSet::new();
    for e in events {
        let name = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        let (who, seen) = match e["event"].as_str().unwrap_or_default() {
            "member_missing" => (name("member"), "missing"),
            "member_returned" => (name("member"), "present"),
            "silo_joined" => (name("silo"), "present"),
            "aggregator_joined" => (name("aggregator"), "present"),
            "silo_left" => (name("silo"), "missing"),
            "aggregator_left" => (name("aggregator"), "missing"),
            "unexpected_member" => {
                unexpected.insert(name("member"));
                continue;
            }
            _ => continue,
        };
        if roster.is_none()
            && e["event"] == "member_missing"
            && !members.iter().any(|m| m.name == who)
        {
            members.push(RosterMember {
                name: who.clone(),
                region: name("region"),
                role: name("role"),
                missing_reports: 0,
                last_seen: "never seen",
            });
        }
        if let Some(m) = members.iter_mut().find(|m| m.name == who) {
            m.last_seen = seen;
            if e["event"] == "member_missing" {
                m.missing_reports += 1;
            }
        }
    }
    RosterReport {
        from_federation_file: roster.is_some(),
        members,
        unexpected: unexpected.into_iter().collect(),
    }
}
