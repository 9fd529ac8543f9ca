//! The daemon's mounts: the `[[mount]]` tables of its config, kept mounted.
//!
//! The daemon tells its [`Mounts`] when the config is (re)loaded (mount what
//! is new, unmount what is gone, remount what changed), when an execution
//! wrote into a place (every mount showing that place drops its caches and
//! tells the kernel, so readers see the new data at once instead of after
//! the metadata TTL), and when it stops (unmount everything, uploading what
//! open files have not uploaded yet).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::config::spec::{S3Overrides, S3Tuning};
use crate::config::{Config, MountConfig};
use crate::location::Place;
use crate::mount::command::{check_location, MountArgs};
use crate::mount::{Invalidator, Mounted};
use crate::task::execution::WrittenHook;

#[async_trait]
pub trait Mounts: Send {
    /// Mount what `config` declares and is not mounted; unmount what it no
    /// longer declares; remount what changed (SIGHUP).
    async fn apply(&mut self, config: &Config);
    /// What an execution calls once it wrote into a place: mounts showing
    /// it drop their caches (before the execution's end is recorded).
    fn written_hook(&self) -> WrittenHook;
    /// Unmount everything (SIGTERM).
    async fn unmount_all(&mut self);
}

/// FUSE mounts of the `[[mount]]` tables.
pub struct FuseMounts {
    state_dir: PathBuf,
    active: Vec<(MountConfig, Mounted)>,
    /// The active mounts' invalidators, shared with running executions.
    invalidators: Arc<Mutex<Vec<Invalidator>>>,
}

impl FuseMounts {
    pub fn new(state_dir: PathBuf) -> FuseMounts {
        FuseMounts {
            state_dir,
            active: Vec::new(),
            invalidators: Arc::default(),
        }
    }

    async fn mount_one(&self, config: &Config, m: &MountConfig) -> anyhow::Result<Mounted> {
        let kind = config
            .task_location(&m.location, "mount location")
            .map_err(anyhow::Error::msg)?;
        let loc = kind
            .open(
                &S3Overrides::default(),
                S3Tuning::default(),
                self.state_dir.join("uploads"),
                true,
            )
            .await?;
        check_location(&loc).await?;
        let opts = MountArgs::from_config(m).options(&self.state_dir);
        Ok(crate::mount::mount(loc, &m.path, &opts)?)
    }

    fn publish(&self) {
        let list = self.active.iter().map(|(_, m)| m.invalidator()).collect();
        *crate::lock(&self.invalidators) = list;
    }

    async fn unmount(m: &MountConfig, mounted: Mounted) {
        match mounted.unmount().await {
            Ok(()) => tracing::info!(path = %m.path.display(), "unmounted"),
            Err(e) => tracing::error!(path = %m.path.display(), error = %e, "unmount failed"),
        }
    }
}

#[async_trait]
impl Mounts for FuseMounts {
    async fn apply(&mut self, config: &Config) {
        let wanted: Vec<MountConfig> = config.mount.iter().map(|m| m.get_ref().clone()).collect();
        let (keep, stale): (Vec<_>, Vec<_>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|(m, mounted)| wanted.contains(m) && mounted.is_alive());
        self.active = keep;
        self.publish();
        for (m, mounted) in stale {
            Self::unmount(&m, mounted).await;
        }
        for m in wanted {
            if self.active.iter().any(|(a, _)| *a == m) {
                continue;
            }
            match self.mount_one(config, &m).await {
                Ok(mounted) => {
                    tracing::info!(location = %m.location, path = %m.path.display(), "mounted");
                    self.active.push((m, mounted));
                }
                Err(e) => {
                    tracing::error!(location = %m.location, path = %m.path.display(), error = %format!("{e:#}"), "cannot mount")
                }
            }
        }
        self.publish();
    }

    fn written_hook(&self) -> WrittenHook {
        let invalidators = self.invalidators.clone();
        Arc::new(move |destination: &Place| {
            let list = crate::lock(&invalidators).clone();
            for inv in list.iter().filter(|i| i.place().overlaps(destination)) {
                tracing::info!(place = %inv.place(), "an execution wrote into a mounted location: its caches are dropped");
                inv.invalidate_all();
            }
        })
    }

    async fn unmount_all(&mut self) {
        let all = std::mem::take(&mut self.active);
        self.publish();
        for (m, mounted) in all {
            Self::unmount(&m, mounted).await;
        }
    }
}
