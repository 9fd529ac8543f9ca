//! Peak memory of the two-way three-way merge over N keys: a real SQLite
//! base of N rows (`engine::base::Base`, written with `record` and
//! `commit` as an execution does), streamed back with `Base::stream()`
//! and merged in key order against two synthetic sorted listings (side A
//! local files, side B S3 objects), computing the engine's pure
//! `three_way::listed_state` and `decide` per key. Prints how long the base
//! took to write, the decisions, and VmHWM for the writing and for the
//! merge alone (the peak is reset in between through /proc/self/clear_refs).
//!
//!     cargo run --release --example three_way_rss -- 10000000
//!
//! The key count comes from the first argument, else THREE_WAY_KEYS, else
//! 100,000. The base lives in a temporary directory (THREE_WAY_DIR to pick
//! where; 10 M rows take about 1.5 GB of disk).
//!
//! The engine's own merge (`two_way::Merge`) is private; this drives the
//! same three streams through the same public decisions. Keys whose
//! fingerprint moved (`listed_state` → None) would get a HEAD in a real
//! run; here they count as changed, which is what that HEAD would say.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::StreamExt;
use syncmount::engine::base::{Base, BaseRow};
use syncmount::engine::three_way::{decide, fingerprint, listed_state, Decision, Side, SideState};
use syncmount::location::{Entry, PosixMeta};

fn key(i: u64) -> String {
    // Zero-padded so numeric order is byte order; nested like real trees.
    format!("dir{:04}/file{:010}.dat", i / 10_000, i)
}

/// Side A (a local file) as listed: changed where i.is_multiple_of(13).
fn a_entry(i: u64, now: bool) -> Entry {
    let changed = now && i.is_multiple_of(13);
    Entry {
        key: key(i),
        size: if changed { 101 } else { 100 },
        modified: None,
        etag: None,
        meta: Some(PosixMeta {
            mtime_ns: Some(1_700_000_000_000_000_000 + i as i128 + if changed { 1 } else { 0 }),
            mode: Some(0o100644),
            uid: Some(1000),
            gid: Some(1000),
            rdev: None,
            ctime_ns: None,
        }),
    }
}

/// Side B (an S3 object) as listed: changed where i.is_multiple_of(17).
fn b_entry(i: u64, now: bool) -> Entry {
    let changed = now && i.is_multiple_of(17);
    Entry {
        key: key(i),
        size: 100,
        modified: Some(
            UNIX_EPOCH + Duration::from_secs(1_700_000_000 + if changed { 60 } else { 0 }),
        ),
        etag: Some(format!("\"{:032x}\"", i * 2 + changed as u64)),
        meta: None,
    }
}

/// The synthetic history: the base holds every key but each 97th (new on
/// the sides that have it); A lists every key but each 7th (deleted on A,
/// or never there), B every key but each 11th.
fn in_base(i: u64) -> bool {
    !i.is_multiple_of(97)
}
fn on_a(i: u64) -> bool {
    !i.is_multiple_of(7)
}
fn on_b(i: u64) -> bool {
    !i.is_multiple_of(11)
}

fn vm_hwm_kib() -> u64 {
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

/// Resets VmHWM to the current RSS (Linux ≥ 4.0); false when refused.
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn label(d: Decision) -> &'static str {
    match d {
        Decision::Nothing => "nothing",
        Decision::Forget => "forget",
        Decision::Copy {
            from: Side::A,
            conflict: false,
            ..
        } => "copy-a-to-b",
        Decision::Copy {
            from: Side::B,
            conflict: false,
            ..
        } => "copy-b-to-a",
        Decision::Copy { conflict: true, .. } => "copy-over-delete",
        Decision::Delete { on: Side::A, .. } => "delete-a",
        Decision::Delete { on: Side::B, .. } => "delete-b",
        Decision::Compare => "compare",
    }
}

pub struct Outcome {
    pub write_s: f64,
    pub merge_s: f64,
    pub write_hwm_kib: u64,
    pub merge_hwm_kib: u64,
    pub hwm_reset: bool,
    pub keys: u64,
    /// Keys done from the listings alone (both sides as recorded).
    pub fast: u64,
    /// Keys whose fingerprint moved on a side (a HEAD in a real run).
    pub heads: u64,
    pub decisions: BTreeMap<&'static str, u64>,
}

pub async fn run(n: u64, dir: &std::path::Path) -> Outcome {
    let (path, swapped) = Base::path_for(dir, "/local/side-a", "s3://bucket/side-b");
    let base = Base::open(&path, swapped, false).expect("open base");
    let start = Instant::now();
    for i in (0..n).filter(|&i| in_base(i)) {
        let (a, b) = (a_entry(i, false), b_entry(i, false));
        base.record(&BaseRow {
            key: a.key.clone(),
            a_fp: fingerprint(&a),
            b_fp: fingerprint(&b),
            size: a.size,
            mtime_ns: a.meta.and_then(|m| m.mtime_ns),
            mode: Some(0o100644),
            uid: Some(1000),
            gid: Some(1000),
            crc32c: Some(i as u32),
        })
        .expect("record");
    }
    base.commit().expect("commit");
    if n >= 1_000_000 {
        eprintln!(
            "three_way_rss: base of {n} keys written in {:.0} s",
            start.elapsed().as_secs_f64()
        );
    }
    let write_s = start.elapsed().as_secs_f64();
    let write_hwm_kib = vm_hwm_kib();
    let hwm_reset = reset_hwm();

    let start = Instant::now();
    let mut rows = base.stream().peekable();
    let mut a = (0..n)
        .filter(|&i| on_a(i))
        .map(|i| a_entry(i, true))
        .peekable();
    let mut b = (0..n)
        .filter(|&i| on_b(i))
        .map(|i| b_entry(i, true))
        .peekable();
    let (mut keys, mut fast, mut heads) = (0u64, 0u64, 0u64);
    let mut decisions: BTreeMap<&'static str, u64> = BTreeMap::new();
    loop {
        let hbase = match std::pin::Pin::new(&mut rows).peek().await {
            Some(Ok(r)) => Some(r.key.clone()),
            Some(Err(e)) => panic!("base stream: {e}"),
            None => None,
        };
        let Some(k) = [
            a.peek().map(|e| &e.key),
            b.peek().map(|e| &e.key),
            hbase.as_ref(),
        ]
        .into_iter()
        .flatten()
        .min_by(|x, y| x.as_bytes().cmp(y.as_bytes()))
        .cloned() else {
            break;
        };
        let ea = a.next_if(|e| e.key == k);
        let eb = b.next_if(|e| e.key == k);
        let row = if hbase.as_deref() == Some(k.as_str()) {
            rows.next().await.map(|r| r.expect("base row"))
        } else {
            None
        };
        keys += 1;
        if keys.is_multiple_of(1_000_000) {
            eprintln!(
                "three_way_rss: {keys} keys merged, {:.0} s, VmHWM {:.1} MiB",
                start.elapsed().as_secs_f64(),
                vm_hwm_kib() as f64 / 1024.0
            );
        }
        let sa = listed_state(ea.as_ref(), row.as_ref(), Side::A);
        let sb = listed_state(eb.as_ref(), row.as_ref(), Side::B);
        if row.is_some() && sa == Some(SideState::Unchanged) && sb == Some(SideState::Unchanged) {
            fast += 1;
        }
        heads += sa.is_none() as u64 + sb.is_none() as u64;
        let d = decide(
            sa.unwrap_or(SideState::Changed),
            sb.unwrap_or(SideState::Changed),
        );
        *decisions.entry(label(d)).or_default() += 1;
    }
    let merge_s = start.elapsed().as_secs_f64();
    Outcome {
        write_s,
        merge_s,
        write_hwm_kib,
        merge_hwm_kib: vm_hwm_kib(),
        hwm_reset,
        keys,
        fast,
        heads,
        decisions,
    }
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("THREE_WAY_KEYS").ok())
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(100_000);
    let tmp = match std::env::var_os("THREE_WAY_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    let o = run(n, tmp.path()).await;
    let base_mib = std::fs::read_dir(tmp.path().join("bases"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0) as f64
        / 1_048_576.0;
    let decisions: Vec<String> = o
        .decisions
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "keys={} base_rows_write_s={:.1} base_mib={base_mib:.0} merge_s={:.1} fast={} heads={} {} write_peak_rss_mib={:.1} merge_peak_rss_mib={:.1}{}",
        o.keys,
        o.write_s,
        o.merge_s,
        o.fast,
        o.heads,
        decisions.join(" "),
        o.write_hwm_kib as f64 / 1024.0,
        o.merge_hwm_kib as f64 / 1024.0,
        if o.hwm_reset { "" } else { " (peak not reset: merge peak includes writing)" },
    );
}

#[cfg(test)]
mod tests {
    /// A small run, checked against the counts the synthetic history must
    /// give (run by `cargo test --examples`).
    #[tokio::test(flavor = "multi_thread")]
    async fn the_merge_decides_as_the_history_says() {
        let n = 30_000;
        let dir = tempfile::tempdir().unwrap();
        let o = super::run(n, dir.path()).await;
        let count = |f: &dyn Fn(u64) -> bool| (0..n).filter(|&i| f(i)).count() as u64;
        use super::{in_base, on_a, on_b};
        let (ca, cb) = (|i: u64| i.is_multiple_of(13), |i: u64| i.is_multiple_of(17));
        assert_eq!(o.keys, count(&|i| in_base(i) || on_a(i) || on_b(i)));
        assert_eq!(
            o.fast,
            count(&|i| in_base(i) && on_a(i) && on_b(i) && !ca(i) && !cb(i))
        );
        let d = |k: &str| o.decisions.get(k).copied().unwrap_or(0);
        // In the base, unchanged on B, deleted on A → deleted on B.
        assert_eq!(
            d("delete-b"),
            count(&|i| in_base(i) && !on_a(i) && on_b(i) && !cb(i))
        );
        assert_eq!(
            d("delete-a"),
            count(&|i| in_base(i) && on_a(i) && !ca(i) && !on_b(i))
        );
        assert_eq!(
            d("copy-a-to-b"),
            count(&|i| on_a(i)
                && if in_base(i) {
                    ca(i) && on_b(i) && !cb(i)
                } else {
                    !on_b(i)
                })
        );
        assert_eq!(d("forget"), count(&|i| in_base(i) && !on_a(i) && !on_b(i)));
        assert_eq!(
            d("compare"),
            count(&|i| on_a(i) && on_b(i) && (!in_base(i) || (ca(i) && cb(i))))
        );
    }
}
