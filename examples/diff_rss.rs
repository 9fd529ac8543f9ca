//! Peak memory of the diff over synthetic listings of N keys (default 10
//! million): both sides are generated lazily in byte order, with a mix of
//! identical, changed, source-only and destination-only keys, and run through
//! the real `engine::diff::diff`. Prints the action counts and VmHWM.
//!
//!     cargo run --release --example diff_rss -- 10000000

use futures::stream::{self, StreamExt};
use syncmount::engine::diff::{
    diff, Action, DiffOptions, Overwrite, PreserveDeleted, TransferMode,
};
use syncmount::engine::filter::Filter;
use syncmount::location::{Entry, PosixMeta};

fn entry(i: u64, size: u64, mtime: i128) -> Entry {
    Entry {
        // Zero-padded so numeric order is byte order; nested like real trees.
        key: format!("dir{:04}/file{:010}.dat", i / 10_000, i),
        size,
        modified: None,
        etag: None,
        meta: Some(PosixMeta {
            mtime_ns: Some(mtime),
            ..Default::default()
        }),
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    // Source: every key but each 7th; destination: every key but each 11th;
    // each 13th differs in size, so all four kinds of action occur.
    let src = stream::iter((0..n).filter(|i| i % 7 != 0).map(|i| Ok(entry(i, 100, 1))));
    let dst = stream::iter(
        (0..n)
            .filter(|i| i % 11 != 0)
            .map(|i| Ok(entry(i, if i % 13 == 0 { 99 } else { 100 }, 1))),
    );
    let opts = DiffOptions {
        transfer_mode: TransferMode::Changed,
        overwrite: Overwrite::Always,
        preserve_deleted: PreserveDeleted::Remove,
        filter: Filter::default(),
        dst_keys_are_paths: true,
        privileges: Default::default(),
    };
    let start = std::time::Instant::now();
    let (mut copy, mut del, mut skip, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut actions = diff(src.boxed(), dst.boxed(), opts);
    while let Some(a) = actions.next().await {
        match a {
            Ok(Action::Copy { .. }) => copy += 1,
            Ok(Action::Delete { .. }) => del += 1,
            Ok(Action::Skip { .. }) => skip += 1,
            _ => other += 1,
        }
    }
    println!(
        "keys={n} copy={copy} delete={del} skip={skip} other={other} seconds={:.1} peak_rss_mib={:.1}",
        start.elapsed().as_secs_f64(),
        peak_rss_kib() as f64 / 1024.0
    );
}
