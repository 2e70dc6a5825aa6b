//! Leader election on a `coordination.k8s.io` Lease, so two replicas can run and only one writes.
//!
//! The controllers start only once this replica holds the lease, and the process exits as soon
//! as it loses it (the Deployment restarts it as a standby): no two replicas ever write at the
//! same time, and a stopping leader releases the lease so the standby takes over at once.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Name of the Lease.
pub const LEASE_NAME: &str = "visio-operator-leader";

/// How often a standby reads the Lease. kube-lease-manager alone reads it again only when the
/// holder's term would expire, so a Lease released by a stopping leader would wait out its full
/// duration; read every second, it is taken within about a second of its release.
const STANDBY_POLL: Duration = Duration::from_secs(1);

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
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
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
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(elect(manager, tx));
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

/// The election loop (what `LeaseManager::watch` does, plus the standby's poll): `changed()`
/// renews the Lease while leading and resolves when leadership changes; as a standby it is
/// restarted every [`STANDBY_POLL`], each start reading the Lease again. Cancelling it is safe:
/// its next start re-reads the Lease before deciding anything. When every receiver is gone (the
/// process stops), the Lease is released.
async fn elect(manager: LeaseManager, tx: watch::Sender<bool>) -> Result<LeaseManager, LeaseManagerError> {
    let mut leading = false;
    let mut failures = 0u32;
    loop {
        let step = async {
            if leading {
                manager.changed().await.map(Some)
            } else {
                match tokio::time::timeout(STANDBY_POLL, manager.changed()).await {
                    Ok(r) => r.map(Some),
                    Err(_elapsed) => Ok(None),
                }
            }
        };
        tokio::select! {
            biased;
            _ = tx.closed() => break,
            r = step => match r {
                Ok(Some(now)) => {
                    failures = 0;
                    leading = now;
                    if tx.send(now).is_err() {
                        break;
                    }
                }
                Ok(None) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, lease = LEASE_NAME, "cannot read or renew the leader Lease; retrying");
                    tokio::time::sleep(Duration::from_secs(u64::from(failures.min(5)))).await;
                }
            },
        }
    }
    manager.release().await?;
    Ok(manager)
}
