//! The hook between the daemon and the mount layer. The daemon tells its
//! [`Mounts`] when the config is (re)loaded, when an execution wrote into a
//! place (so a mount of it can drop cached entries and tell the kernel), and
//! when it stops. [`NoMounts`] is what runs until the FUSE mount manager is
//! wired in: it only says that `[[mount]]` tables are not served yet.

use crate::config::Config;
use crate::location::Place;

pub trait Mounts: Send {
    /// Mount what `config` declares and is not mounted; unmount what it no
    /// longer declares; remount what changed (SIGHUP).
    fn apply(&mut self, config: &Config);
    /// An execution wrote into `destination`: invalidate mounts showing it.
    fn written(&self, destination: &Place);
    /// Unmount everything (SIGTERM).
    fn unmount_all(&mut self);
}

/// No mount manager yet: `[[mount]]` tables are parsed and checked but not mounted.
#[derive(Debug, Default)]
pub struct NoMounts;

impl Mounts for NoMounts {
    fn apply(&mut self, config: &Config) {
        if !config.mount.is_empty() {
            tracing::warn!(
                mounts = config.mount.len(),
                "[[mount]] tables are not mounted by this build of the daemon; use `syncmount mount`"
            );
        }
    }

    fn written(&self, _destination: &Place) {}

    fn unmount_all(&mut self) {}
}
