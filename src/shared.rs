//! Argument and error types the command line shares with the layers below
//! it (the daemon, the mount command), kept here so that nothing below the
//! CLI imports from it.

use clap::Args;

/// S3 connection settings that apply to both sides.
#[derive(Args, Debug, Clone, Default)]
pub struct SideArgs {
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub endpoint_url: Option<String>,
    #[arg(long)]
    pub profile: Option<String>,
}

/// An error that is the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
