//! Who may act. Several rollwatch instances may one day watch the same targets for high
//! availability, with one acting through a lease held in an existing engine (a PostgreSQL
//! advisory lock or etcd). Every side effect already asks [`Lease::is_leader`]; today the only
//! lease is [`SoleInstance`], which always says yes.

/// The right to act on deployments. Checked right before every rollback, so an instance that
/// lost its lease mid-way stops at the next action instead of racing the new leader.
pub trait Lease: Send + Sync {
    fn is_leader(&self) -> bool;

    /// A short description for logs and the status of withheld actions.
    fn describe(&self) -> String;
}

/// One rollwatch for these targets: always the leader.
#[derive(Debug, Default, Clone, Copy)]
pub struct SoleInstance;

impl Lease for SoleInstance {
    fn is_leader(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "sole instance".into()
    }
}
