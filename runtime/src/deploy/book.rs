//! Which version goes where: the coordinator's book of deployment orders.
//!
//! An order deploys one committed version to every silo, a region or named silos. What a silo
//! should hold is the last order that covers it ([`DeploymentBook::desired`]), so a later order
//! to a region overrides an earlier one to all for that region alone, and an offline silo gets
//! whatever is due when it returns. The book is rebuilt from the audit journal at start (one
//! `deployed` record per order); it is pure data, tested without processes.

use serde::{Deserialize, Serialize};

/// The silos an order is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum Target {
    /// Every silo of the federation, present or not.
    All,
    /// The silos whose certificate names this region.
    Region {
        /// The region.
        region: String,
    },
    /// These silos, by name.
    Silos {
        /// Their names.
        silos: Vec<String>,
    },
}

impl Target {
    /// Whether the silo `name` of `region` is one of the target's.
    pub fn covers(&self, name: &str, region: &str) -> bool {
        match self {
            Target::All => true,
            Target::Region { region: r } => r == region,
            Target::Silos { silos } => silos.iter().any(|s| s == name),
        }
    }

    /// Whether every silo `other` covers is one this covers too (whatever their regions).
    pub fn includes(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::All, _) => true,
            (Target::Region { region: a }, Target::Region { region: b }) => a == b,
            (Target::Silos { silos: a }, Target::Silos { silos: b }) => {
                b.iter().all(|s| a.contains(s))
            }
            _ => false,
        }
    }

    /// In words, for messages and the report.
    pub fn describe(&self) -> String {
        match self {
            Target::All => "every silo".into(),
            Target::Region { region } => format!("the silos of region {region}"),
            Target::Silos { silos } => silos.join(", "),
        }
    }
}

/// One order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Its id (1, 2, …).
    pub id: u64,
    /// The version deployed.
    pub version: u64,
    /// The version's parameter digest (hex).
    pub digest: String,
    /// Where to.
    pub target: Target,
    /// Who ordered it: an operator, `policy auto_deploy`, or a rollback's operator.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// Every order, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentBook {
    orders: Vec<Deployment>,
}

impl DeploymentBook {
    /// The id the next order gets.
    pub fn next_id(&self) -> u64 {
        self.orders.last().map_or(1, |d| d.id + 1)
    }

    /// Adds an order (from a decision now, or from the journal at start).
    pub fn record(&mut self, d: Deployment) {
        self.orders.push(d);
    }

    /// Every order, oldest first.
    pub fn all(&self) -> &[Deployment] {
        &self.orders
    }

    /// The order the silo `name` of `region` should hold the version of: the last that covers
    /// it (`None`: nothing was ever deployed to it).
    pub fn desired(&self, name: &str, region: &str) -> Option<&Deployment> {
        self.orders
            .iter()
            .rev()
            .find(|d| d.target.covers(name, region))
    }

    /// The targets a rollback to `to` redeploys `to` to: those of every order still in force
    /// (no later order covers all of its silos) that deployed a later version than `to`.
    pub fn after_rollback(&self, to: u64) -> Vec<Target> {
        let mut targets: Vec<Target> = Vec::new();
        for (i, d) in self.orders.iter().enumerate() {
            let superseded = self.orders[i + 1..]
                .iter()
                .any(|l| l.target.includes(&d.target));
            if d.version > to && !superseded && !targets.contains(&d.target) {
                targets.push(d.target.clone());
            }
        }
        targets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(book: &DeploymentBook, version: u64, target: Target) -> Deployment {
        Deployment {
            id: book.next_id(),
            version,
            digest: format!("{version:064x}"),
            target,
            by: "alice".into(),
            reason: String::new(),
            at_ms: 0,
        }
    }

    fn region(r: &str) -> Target {
        Target::Region { region: r.into() }
    }

    #[test]
    fn a_silo_holds_the_last_order_that_covers_it() {
        let mut book = DeploymentBook::default();
        assert_eq!(book.desired("bank-a", "eu"), None);
        book.record(order(&book, 1, Target::All));
        book.record(order(&book, 2, region("us")));
        let silos = Target::Silos {
            silos: vec!["bank-c".into()],
        };
        book.record(order(&book, 3, silos));
        let v = |name, region| book.desired(name, region).map(|d| d.version);
        assert_eq!(v("bank-a", "eu"), Some(1));
        assert_eq!(v("bank-b", "us"), Some(2));
        assert_eq!(v("bank-c", "us"), Some(3));
        assert_eq!(book.next_id(), 4);
        assert_eq!(book.desired("bank-c", "us").map(|d| d.id), Some(3));
    }

    #[test]
    fn a_rollback_redeploys_where_a_later_version_is_in_force() {
        let mut book = DeploymentBook::default();
        book.record(order(&book, 1, Target::All));
        book.record(order(&book, 2, region("eu")));
        // v2 to eu is in force; rolling back to v1 redeploys v1 there.
        assert_eq!(book.after_rollback(1), vec![region("eu")]);
        book.record(order(&book, 3, Target::All));
        // v3 to all covers eu too: the eu order is out of force.
        assert_eq!(book.after_rollback(2), vec![Target::All]);
        assert_eq!(book.after_rollback(1), vec![Target::All]);
        // Nothing later than v3 was deployed.
        assert!(book.after_rollback(3).is_empty());
        // An order to all after one to a region puts the region's out of force: rolling back
        // below the region's version does not move its silos up from the later order.
        let mut later = DeploymentBook::default();
        later.record(order(&later, 4, region("eu")));
        later.record(order(&later, 1, Target::All));
        assert!(later.after_rollback(3).is_empty());
        assert!(Target::All.includes(&region("eu")));
        let ab = Target::Silos {
            silos: vec!["a".into(), "b".into()],
        };
        let a = Target::Silos {
            silos: vec!["a".into()],
        };
        assert!(ab.includes(&a) && !a.includes(&ab) && !region("eu").includes(&a));
        // A rollback's own order puts an end to it.
        book.record(order(&book, 1, Target::All));
        book.record(order(&book, 1, region("eu")));
        assert!(book.after_rollback(1).is_empty());
        assert_eq!(book.desired("bank-a", "eu").map(|d| d.version), Some(1));
    }
}
