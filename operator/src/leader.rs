//! Leader election on a `coordination.k8s.io` Lease, so two replicas can run and only one writes.
//!
//! The controllers start only once this replica holds the lease, and the process exits as soon
//! as it loses it (the Deployment restarts it as a standby): no two replicas ever write at the
//! same time, and a stopping leader releases the lease so the standby takes over at once.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the Lease.
pub const LEASE_NAME: &str = "visio-operator-leader";

/// Lease timing: a dead leader is replaced within `duration` seconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Seconds the lease stays valid after its last renewal.
    pub duration: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self { duration: 15, grace: 5 }
    }
}

/// This replica's part in the election.
pub struct Leadership {
    rx: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

impl Leadership {
    /// Joins the election (creating the Lease if needed).
    pub async fn join(
        client: Client,
        namespace: &str,
        identity: &str,
        timing: Timing,
    ) -> Result<Self, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(timing.duration)
            .with_grace(timing.grace)
            .with_field_manager("visio-operator-leader")
            .build()
            .await?;
        let (rx, task) = manager.watch().await;
        Ok(Self { rx, task })
    }

    /// Waits until this replica leads.
    pub async fn acquired(&mut self) {
        while !*self.rx.borrow_and_update() {
            if self.rx.changed().await.is_err() {
                // The election task ended: stay a standby forever rather than write without the lease.
                futures::future::pending::<()>().await;
            }
        }
    }

    /// Resolves when this replica stops leading.
    pub async fn lost(&mut self) {
        loop {
            if !*self.rx.borrow_and_update() {
                return;
            }
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Releases the lease (on shutdown), so a standby takes over without waiting for expiry.
    pub async fn release(self) {
        drop(self.rx);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}
