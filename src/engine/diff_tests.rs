//! Tests of the diff: the per-key decision ([`decide`], [`decide_with_info`])
//! and the streaming merge-join ([`diff`]), including a model-based proptest.

use super::*;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use crate::location::key::UnsafeReason;
use crate::location::Checksum;
use futures::stream::StreamExt;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const MS: i128 = 1_000_000;
const SEC: i128 = 1_000_000_000;

fn at(ns: i128) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).expect("test times are after the epoch"))
}

fn entry(key: &str, size: u64) -> Entry {
    Entry {
        key: key.into(),
        size,
        modified: None,
        etag: None,
        meta: None,
    }
}

/// An entry as a local walk lists it: the POSIX mtime is known.
fn with_mtime(mut e: Entry, ns: i128) -> Entry {
    e.meta = Some(PosixMeta {
        mtime_ns: Some(ns),
        ..PosixMeta::default()
    });
    e.modified = Some(at(ns));
    e
}

/// An entry as an S3 listing shows it: LastModified (upload time), no POSIX mtime.
fn uploaded_at(mut e: Entry, ns: i128) -> Entry {
    e.modified = Some(at(ns));
    e
}

fn with_etag(mut e: Entry, etag: &str) -> Entry {
    e.etag = Some(etag.into());
    e
}

fn opts() -> DiffOptions {
    DiffOptions {
        transfer_mode: TransferMode::Changed,
        overwrite: Overwrite::Always,
        preserve_deleted: PreserveDeleted::Remove,
        filter: Filter::default(),
        dst_keys_are_paths: false,
        privileges: Default::default(),
    }
}

fn local_opts() -> DiffOptions {
    DiffOptions {
        dst_keys_are_paths: true,
        ..opts()
    }
}

fn copy_of(src: &Entry, dst: Option<&Entry>, reason: CopyReason) -> Action {
    Action::Copy {
        src: src.clone(),
        dst: dst.cloned(),
        reason,
    }
}

fn unchanged(key: &str) -> Action {
    Action::Skip {
        key: key.into(),
        reason: SkipReason::Unchanged,
    }
}

fn info(size: u64) -> ObjectInfo {
    ObjectInfo {
        size,
        ..ObjectInfo::default()
    }
}

fn info_with_mtime(size: u64, ns: i128) -> ObjectInfo {
    ObjectInfo {
        size,
        meta: PosixMeta {
            mtime_ns: Some(ns),
            ..PosixMeta::default()
        },
        ..ObjectInfo::default()
    }
}

fn with_checksum(mut i: ObjectInfo, c: Checksum) -> ObjectInfo {
    i.checksum = Some(c);
    i
}

fn unsafe_key_error(key: &str) -> LocationError {
    LocationError::UnsafeKey {
        location: "/src".into(),
        key: key.into(),
        reason: UnsafeReason::ComponentTooLong(300),
    }
}

fn fatal_error() -> LocationError {
    LocationError::Io {
        location: "s3://bucket/prefix".into(),
        op: "ListObjectsV2",
        key: String::new(),
        message: "Access Denied".into(),
        transient: false,
    }
}

type Item = Result<Entry, LocationError>;

fn listing(items: Vec<Item>) -> BoxStream<'static, Item> {
    futures::stream::iter(items).boxed()
}

fn ok_listing(entries: &[Entry]) -> BoxStream<'static, Item> {
    listing(entries.iter().cloned().map(Ok).collect())
}

/// Runs the diff to its end (the stream's `None`).
async fn run(
    src: BoxStream<'static, Item>,
    dst: BoxStream<'static, Item>,
    opts: DiffOptions,
) -> Vec<Result<Action, LocationError>> {
    diff(src, dst, opts).collect().await
}

/// Runs a diff that must not fail, returning its actions.
async fn run_ok(src: &[Entry], dst: &[Entry], opts: DiffOptions) -> Vec<Action> {
    run(ok_listing(src), ok_listing(dst), opts)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("unexpected diff error: {e}")))
        .collect()
}

/// A one-line summary of an action, to compare sequences at a glance.
fn summary(a: &Action) -> String {
    match a {
        Action::Copy { src, reason, .. } => format!("copy {} ({reason:?})", src.key),
        Action::Check { src, .. } => format!("check {}", src.key),
        Action::Delete { dst } => format!("delete {}", dst.key),
        Action::Skip {
            key,
            reason: SkipReason::Refused(_),
        } => format!("refuse {key}"),
        Action::Skip { key, reason } => format!("skip {key} ({reason})"),
    }
}

fn summaries(actions: &[Action]) -> Vec<String> {
    actions.iter().map(summary).collect()
}

fn refused_reason(a: &Action) -> &str {
    match a {
        Action::Skip {
            reason: SkipReason::Refused(why),
            ..
        } => why,
        other => panic!("expected a refused skip, got {other:?}"),
    }
}

fn sorted_by_bytes(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    entries
}

// ---------------------------------------------------------------------------
// decide
// ---------------------------------------------------------------------------

#[test]
fn no_entry_on_either_side_decides_nothing() {
    assert_eq!(decide(None, None, &opts()), None);
}

#[test]
fn a_key_only_in_the_source_is_copied_as_new() {
    let s = entry("a", 3);
    assert_eq!(
        decide(Some(&s), None, &opts()),
        Some(copy_of(&s, None, CopyReason::New))
    );
}

#[test]
fn a_directory_marker_only_in_the_source_is_copied_as_new() {
    let s = entry("dir/", 0);
    assert_eq!(
        decide(Some(&s), None, &opts()),
        Some(copy_of(&s, None, CopyReason::New))
    );
}

#[test]
fn a_key_whose_sizes_differ_is_copied() {
    let s = with_mtime(entry("a", 3), 10 * SEC);
    let d = with_mtime(entry("a", 4), 10 * SEC);
    assert_eq!(
        decide(Some(&s), Some(&d), &opts()),
        Some(copy_of(&s, Some(&d), CopyReason::SizeDiffers))
    );
}

#[test]
fn a_size_difference_is_found_even_when_the_etags_are_equal() {
    let s = with_etag(entry("a", 3), "\"e\"");
    let d = with_etag(entry("a", 4), "\"e\"");
    assert_eq!(
        decide(Some(&s), Some(&d), &opts()),
        Some(copy_of(&s, Some(&d), CopyReason::SizeDiffers))
    );
}

#[test]
fn a_setuid_bit_a_local_destination_does_not_keep_is_no_difference() {
    let with_mode = |mode: u32| {
        let mut e = with_mtime(entry("su", 3), 5);
        if let Some(m) = e.meta.as_mut() {
            m.mode = Some(0o100000 | mode);
        }
        e
    };
    let (s, d) = (with_mode(0o4755), with_mode(0o755));
    assert_eq!(
        decide(Some(&s), Some(&d), &local_opts()),
        Some(unchanged("su"))
    );
    let keeps = DiffOptions {
        privileges: crate::location::privilege::Privileges::ALL,
        ..local_opts()
    };
    assert_eq!(
        decide(Some(&s), Some(&d), &keeps),
        Some(copy_of(&s, Some(&d), CopyReason::MetadataDiffers))
    );
    // A bucket keeps what it is given: still a difference there.
    assert_eq!(
        decide(Some(&s), Some(&d), &opts()),
        Some(copy_of(&s, Some(&d), CopyReason::MetadataDiffers))
    );
}

#[test]
fn equal_etags_and_sizes_mean_unchanged() {
    let s = with_etag(entry("a", 3), "\"abc\"");
    let d = with_etag(entry("a", 3), "\"abc\"");
    assert_eq!(decide(Some(&s), Some(&d), &opts()), Some(unchanged("a")));
}

#[test]
fn equal_etags_mean_unchanged_even_when_mtimes_differ() {
    let s = with_etag(with_mtime(entry("a", 3), 10 * SEC), "\"abc\"");
    let d = with_etag(with_mtime(entry("a", 3), 20 * SEC), "\"abc\"");
    assert_eq!(decide(Some(&s), Some(&d), &opts()), Some(unchanged("a")));
}

#[test]
fn different_etags_without_mtimes_need_a_check_of_the_stored_metadata() {
    let s = with_etag(uploaded_at(entry("a", 3), 10 * SEC), "\"one\"");
    let d = with_etag(uploaded_at(entry("a", 3), 20 * SEC), "\"two\"");
    assert_eq!(
        decide(Some(&s), Some(&d), &opts()),
        Some(Action::Check {
            src: s.clone(),
            dst: d.clone()
        })
    );
}

#[test]
fn equal_known_mtimes_mean_unchanged() {
    let s = with_mtime(entry("a", 3), 10 * SEC);
    let d = with_mtime(entry("a", 3), 10 * SEC);
    assert_eq!(decide(Some(&s), Some(&d), &opts()), Some(unchanged("a")));
}

#[test]
fn mtimes_less_than_a_millisecond_apart_are_the_same() {
    let s = with_mtime(entry("a", 3), 10 * SEC + 999_999);
    let d = with_mtime(entry("a", 3), 10 * SEC);
    assert_eq!(decide(Some(&s), Some(&d), &opts()), Some(unchanged("a")));
    // Either way round.
    assert_eq!(decide(Some(&d), Some(&s), &opts()), Some(unchanged("a")));
}

#[test]
fn mtimes_a_millisecond_or_more_apart_are_copied() {
    let s = with_mtime(entry("a", 3), 10 * SEC + MS);
    let d = with_mtime(entry("a", 3), 10 * SEC);
    assert_eq!(
        decide(Some(&s), Some(&d), &opts()),
        Some(copy_of(&s, Some(&d), CopyReason::MtimeDiffers))
    );
    // An older source is copied too: "differs", not "newer".
    assert_eq!(
        decide(Some(&d), Some(&s), &opts()),
        Some(copy_of(&d, Some(&s), CopyReason::MtimeDiffers))
    );
}

#[test]
fn a_destination_uploaded_a_whole_second_before_the_source_was_modified_is_copied_without_a_check()
{
    let s = with_mtime(entry("a", 3), 100 * SEC);
    let d = uploaded_at(entry("a", 3), 99 * SEC);
    assert_eq!(
        decide(Some(&s), Some(&d), &opts()),
        Some(copy_of(&s, Some(&d), CopyReason::MtimeDiffers))
    );
}

#[test]
fn a_listed_upload_time_within_the_second_of_the_mtime_needs_a_check() {
    // Listings truncate LastModified to the second: an object listed at
    // 99.0 s may have been uploaded at 99.9 s, after a file modified at 99.5 s.
    let s = with_mtime(entry("a", 3), 99 * SEC + SEC / 2);
    let d = uploaded_at(entry("a", 3), 99 * SEC);
    assert_eq!(
        decide(Some(&s), Some(&d), &opts()),
        Some(Action::Check {
            src: s.clone(),
            dst: d.clone()
        })
    );
}

#[test]
fn a_destination_uploaded_after_the_source_was_modified_needs_a_check() {
    let s = with_mtime(entry("a", 3), 100 * SEC);
    for upload in [100 * SEC, 100 * SEC + 1, 200 * SEC] {
        let d = uploaded_at(entry("a", 3), upload);
        assert_eq!(
            decide(Some(&s), Some(&d), &opts()),
            Some(Action::Check {
                src: s.clone(),
                dst: d.clone()
            }),
            "uploaded at {upload}"
        );
    }
}

#[test]
fn a_destination_without_an_upload_time_needs_a_check() {
    let s = with_mtime(entry("a", 3), 100 * SEC);
    let d = entry("a", 3);
    assert_eq!(
        decide(Some(&s), Some(&d), &opts()),
        Some(Action::Check {
            src: s.clone(),
            dst: d.clone()
        })
    );
}

#[test]
fn without_a_source_mtime_the_upload_time_is_not_compared_and_a_check_is_needed() {
    // An S3 source: LastModified only, which says nothing about the file's mtime.
    let s = uploaded_at(entry("a", 3), 200 * SEC);
    let d = uploaded_at(entry("a", 3), 100 * SEC);
    assert_eq!(
        decide(Some(&s), Some(&d), &opts()),
        Some(Action::Check {
            src: s.clone(),
            dst: d.clone()
        })
    );
}

#[test]
fn a_known_destination_mtime_with_an_unknown_source_mtime_needs_a_check() {
    let s = uploaded_at(entry("a", 3), 200 * SEC);
    let d = with_mtime(entry("a", 3), 100 * SEC);
    assert_eq!(
        decide(Some(&s), Some(&d), &opts()),
        Some(Action::Check {
            src: s.clone(),
            dst: d.clone()
        })
    );
}

#[test]
fn overwrite_never_skips_a_key_that_exists_at_the_destination() {
    let o = DiffOptions {
        overwrite: Overwrite::Never,
        ..opts()
    };
    let s = with_mtime(entry("a", 3), 10 * SEC);
    let d = with_mtime(entry("a", 4), 20 * SEC);
    assert_eq!(
        decide(Some(&s), Some(&d), &o),
        Some(Action::Skip {
            key: "a".into(),
            reason: SkipReason::OverwriteNever
        })
    );
}

#[test]
fn overwrite_never_still_copies_new_keys_and_deletes_extra_ones() {
    let o = DiffOptions {
        overwrite: Overwrite::Never,
        ..opts()
    };
    let s = entry("a", 3);
    assert_eq!(
        decide(Some(&s), None, &o),
        Some(copy_of(&s, None, CopyReason::New))
    );
    let d = entry("b", 3);
    assert_eq!(
        decide(None, Some(&d), &o),
        Some(Action::Delete { dst: d.clone() })
    );
}

#[test]
fn overwrite_never_wins_over_transfer_mode_all() {
    let o = DiffOptions {
        overwrite: Overwrite::Never,
        transfer_mode: TransferMode::All,
        ..opts()
    };
    let s = entry("a", 3);
    assert_eq!(
        decide(Some(&s), Some(&s), &o),
        Some(Action::Skip {
            key: "a".into(),
            reason: SkipReason::OverwriteNever
        })
    );
}

#[test]
fn transfer_mode_all_copies_even_identical_keys() {
    let o = DiffOptions {
        transfer_mode: TransferMode::All,
        ..opts()
    };
    let s = with_etag(with_mtime(entry("a", 3), 10 * SEC), "\"e\"");
    let d = s.clone();
    assert_eq!(
        decide(Some(&s), Some(&d), &o),
        Some(copy_of(&s, Some(&d), CopyReason::TransferModeAll))
    );
}

#[test]
fn transfer_mode_all_copies_directory_markers_too() {
    let o = DiffOptions {
        transfer_mode: TransferMode::All,
        ..opts()
    };
    let s = entry("dir/", 0);
    assert_eq!(
        decide(Some(&s), Some(&s), &o),
        Some(copy_of(&s, Some(&s), CopyReason::TransferModeAll))
    );
}

#[test]
fn directory_markers_on_both_sides_are_unchanged_whatever_their_metadata() {
    let s = with_mtime(entry("dir/", 0), 10 * SEC);
    let d = with_etag(uploaded_at(entry("dir/", 7), SEC), "\"x\"");
    assert_eq!(decide(Some(&s), Some(&d), &opts()), Some(unchanged("dir/")));
}

#[test]
fn a_destination_only_key_is_deleted_when_deleted_files_are_removed() {
    let d = entry("gone", 3);
    assert_eq!(
        decide(None, Some(&d), &opts()),
        Some(Action::Delete { dst: d.clone() })
    );
}

#[test]
fn a_destination_only_key_is_kept_when_deleted_files_are_preserved() {
    let o = DiffOptions {
        preserve_deleted: PreserveDeleted::Preserve,
        ..opts()
    };
    assert_eq!(decide(None, Some(&entry("gone", 3)), &o), None);
    assert_eq!(decide(None, Some(&entry("gone/", 0)), &o), None);
}

#[test]
fn an_action_knows_its_key() {
    let e = entry("k", 1);
    assert_eq!(copy_of(&e, None, CopyReason::New).key(), "k");
    assert_eq!(
        Action::Check {
            src: e.clone(),
            dst: e.clone()
        }
        .key(),
        "k"
    );
    assert_eq!(Action::Delete { dst: e.clone() }.key(), "k");
    assert_eq!(unchanged("k").key(), "k");
}

#[test]
fn skip_reasons_read_as_plain_text() {
    assert_eq!(SkipReason::Unchanged.to_string(), "unchanged");
    assert_eq!(
        SkipReason::OverwriteNever.to_string(),
        "exists at destination and overwrite is NEVER"
    );
    assert_eq!(SkipReason::Refused("why".into()).to_string(), "why");
}

// ---------------------------------------------------------------------------
// decide_with_info
// ---------------------------------------------------------------------------

#[test]
fn stored_sizes_that_differ_are_copied() {
    assert_eq!(
        decide_with_info(&info_with_mtime(3, SEC), &info_with_mtime(4, SEC)),
        Some(CopyReason::SizeDiffers)
    );
}

#[test]
fn equal_crc32c_checksums_mean_unchanged_even_when_mtimes_differ() {
    let s = with_checksum(info_with_mtime(3, 10 * SEC), Checksum::Crc32c(7));
    let d = with_checksum(info_with_mtime(3, 20 * SEC), Checksum::Crc32c(7));
    assert_eq!(decide_with_info(&s, &d), None);
}

#[test]
fn different_crc32c_checksums_are_copied_even_when_mtimes_agree() {
    let s = with_checksum(info_with_mtime(3, 10 * SEC), Checksum::Crc32c(7));
    let d = with_checksum(info_with_mtime(3, 10 * SEC), Checksum::Crc32c(8));
    assert_eq!(decide_with_info(&s, &d), Some(CopyReason::ChecksumDiffers));
}

#[test]
fn equal_composite_checksums_mean_unchanged() {
    let c = Checksum::Crc32cComposite { value: 9, parts: 2 };
    let s = with_checksum(info_with_mtime(3, 10 * SEC), c);
    let d = with_checksum(info_with_mtime(3, 20 * SEC), c);
    assert_eq!(decide_with_info(&s, &d), None);
}

#[test]
fn a_composite_and_a_full_checksum_are_not_compared_and_the_mtime_decides() {
    let full = Checksum::Crc32c(7);
    let composite = Checksum::Crc32cComposite { value: 9, parts: 2 };
    let s = with_checksum(info_with_mtime(3, 10 * SEC), full);
    let same = with_checksum(info_with_mtime(3, 10 * SEC), composite);
    let later = with_checksum(info_with_mtime(3, 20 * SEC), composite);
    assert_eq!(decide_with_info(&s, &same), None);
    assert_eq!(decide_with_info(&same, &s), None);
    assert_eq!(decide_with_info(&s, &later), Some(CopyReason::MtimeDiffers));
}

/// Composite checksums depend on how the object was cut into parts: the same
/// bytes uploaded with 8 MiB parts and with 5 MiB parts give different
/// composites with different part counts, so such a pair says nothing about
/// the content and the mtime must decide.
///
/// FAILS with the current diff.rs: `decide_with_info` compares any two
/// checksums of the same variant and answers `ChecksumDiffers`.
#[test]
fn composite_checksums_with_different_part_counts_fall_back_to_the_mtime() {
    let eight_mib_parts = Checksum::Crc32cComposite {
        value: 0x1111,
        parts: 3,
    };
    let five_mib_parts = Checksum::Crc32cComposite {
        value: 0x2222,
        parts: 4,
    };
    let s = with_checksum(info_with_mtime(20 << 20, 10 * SEC), eight_mib_parts);
    let d = with_checksum(info_with_mtime(20 << 20, 10 * SEC), five_mib_parts);
    assert_eq!(decide_with_info(&s, &d), None);
    let older = with_checksum(info_with_mtime(20 << 20, 5 * SEC), five_mib_parts);
    assert_eq!(decide_with_info(&s, &older), Some(CopyReason::MtimeDiffers));
}

#[test]
fn a_checksum_on_one_side_only_falls_back_to_the_mtime() {
    let s = with_checksum(info_with_mtime(3, 10 * SEC), Checksum::Crc32c(7));
    assert_eq!(decide_with_info(&s, &info_with_mtime(3, 10 * SEC)), None);
    assert_eq!(
        decide_with_info(&info_with_mtime(3, 11 * SEC), &s),
        Some(CopyReason::MtimeDiffers)
    );
}

#[test]
fn stored_mtimes_within_a_millisecond_are_the_same() {
    assert_eq!(
        decide_with_info(
            &info_with_mtime(3, 10 * SEC),
            &info_with_mtime(3, 10 * SEC + 999_999)
        ),
        None
    );
    assert_eq!(
        decide_with_info(
            &info_with_mtime(3, 10 * SEC),
            &info_with_mtime(3, 10 * SEC + MS)
        ),
        Some(CopyReason::MtimeDiffers)
    );
}

#[test]
fn a_stored_mtime_is_preferred_over_last_modified() {
    let mut s = info_with_mtime(3, 10 * SEC);
    s.modified = Some(at(10 * SEC));
    let mut d = info_with_mtime(3, 10 * SEC);
    d.modified = Some(at(500 * SEC)); // uploaded much later, mtime preserved
    assert_eq!(decide_with_info(&s, &d), None);
}

#[test]
fn without_a_stored_mtime_last_modified_stands_in() {
    // The source file's mtime equals the upload time of an object some other
    // tool wrote without POSIX metadata.
    let s = info_with_mtime(3, 10 * SEC);
    let mut d = info(3);
    d.modified = Some(at(10 * SEC));
    assert_eq!(decide_with_info(&s, &d), None);
    d.modified = Some(at(11 * SEC));
    assert_eq!(decide_with_info(&s, &d), Some(CopyReason::MtimeDiffers));
}

#[test]
fn with_no_time_known_on_a_side_the_key_is_copied() {
    assert_eq!(
        decide_with_info(&info(3), &info(3)),
        Some(CopyReason::MtimeDiffers)
    );
    assert_eq!(
        decide_with_info(&info_with_mtime(3, SEC), &info(3)),
        Some(CopyReason::MtimeDiffers)
    );
}

// ---------------------------------------------------------------------------
// meta_to_write
// ---------------------------------------------------------------------------

#[test]
fn the_metadata_written_is_the_stat_result_when_there_is_one() {
    let src = with_mtime(entry("a", 1), 5 * SEC);
    let mut i = info_with_mtime(1, 7 * SEC);
    i.meta.mode = Some(0o100644);
    assert_eq!(meta_to_write(&src, Some(&i)), i.meta);
    assert_eq!(meta_to_write(&src, None), src.meta.unwrap_or_default());
}

#[test]
fn a_missing_mtime_is_filled_from_last_modified() {
    let src = uploaded_at(entry("a", 1), 5 * SEC);
    assert_eq!(meta_to_write(&src, None).mtime_ns, Some(5 * SEC));
    let mut i = info(1);
    i.modified = Some(at(6 * SEC));
    assert_eq!(meta_to_write(&src, Some(&i)).mtime_ns, Some(6 * SEC));
    assert_eq!(meta_to_write(&entry("a", 1), None), PosixMeta::default());
}

// ---------------------------------------------------------------------------
// diff: the stream
// ---------------------------------------------------------------------------

#[tokio::test]
async fn empty_listings_give_no_actions() {
    assert!(run_ok(&[], &[], opts()).await.is_empty());
    assert!(run_ok(&[], &[], local_opts()).await.is_empty());
}

/// In byte order `a b` < `a-b` < `a.b` < `a/b` < `a0` < `é` < `日本`; a merge
/// that compared paths component-wise or by chars would pair them wrongly.
#[tokio::test]
async fn keys_that_sort_differently_as_bytes_and_as_paths_are_matched_one_to_one() {
    let keys = ["a b", "a-b", "a.b", "a/b", "a0", "é", "日本"];
    for w in keys.windows(2) {
        assert!(w[0].as_bytes() < w[1].as_bytes(), "{w:?}");
    }
    let same = |k: &str| with_mtime(entry(k, 1), 10 * SEC);
    // Source: every key but `a.b`; destination: every key but `a/b`, plus `a/c`.
    let src: Vec<Entry> = keys
        .iter()
        .filter(|k| **k != "a.b")
        .map(|k| same(k))
        .collect();
    let dst = sorted_by_bytes(
        keys.iter()
            .filter(|k| **k != "a/b")
            .map(|k| same(k))
            .chain([same("a/c")])
            .collect(),
    );
    for o in [opts(), local_opts()] {
        let actions = run_ok(&src, &dst, o.clone()).await;
        assert_eq!(
            summaries(&actions),
            [
                "skip a b (unchanged)",
                "skip a-b (unchanged)",
                "delete a.b",
                "copy a/b (New)",
                "delete a/c",
                "skip a0 (unchanged)",
                "skip é (unchanged)",
                "skip 日本 (unchanged)",
            ],
            "dst_keys_are_paths = {}",
            o.dst_keys_are_paths
        );
    }
}

#[tokio::test]
async fn actions_carry_both_entries_and_come_out_in_key_order() {
    let s = [
        with_mtime(entry("a", 1), SEC),
        with_mtime(entry("b", 2), SEC),
        with_mtime(entry("c", 1), SEC),
    ];
    let d = [
        with_mtime(entry("b", 1), SEC),
        with_mtime(entry("c", 1), 2 * SEC),
        entry("d", 1),
    ];
    let actions = run_ok(&s, &d, opts()).await;
    assert_eq!(
        actions,
        [
            copy_of(&s[0], None, CopyReason::New),
            copy_of(&s[1], Some(&d[0]), CopyReason::SizeDiffers),
            copy_of(&s[2], Some(&d[1]), CopyReason::MtimeDiffers),
            Action::Delete { dst: d[2].clone() },
        ]
    );
}

#[tokio::test]
async fn excluded_keys_are_neither_copied_nor_deleted() {
    let filter = Filter::new(None, Some("*.tmp|/cache")).expect("valid filter");
    let o = DiffOptions { filter, ..opts() };
    let src = sorted_by_bytes(vec![
        entry("cache/a", 1),
        entry("keep", 1),
        entry("new.tmp", 1),
        entry("sub/x.tmp", 1),
    ]);
    let dst = sorted_by_bytes(vec![
        entry("cache/old", 1),
        entry("gone", 1),
        entry("old.tmp", 1),
        entry("sub/y.tmp", 1),
    ]);
    let actions = run_ok(&src, &dst, o).await;
    assert_eq!(summaries(&actions), ["delete gone", "copy keep (New)"]);
}

#[tokio::test]
async fn with_an_include_filter_only_included_keys_are_copied_or_deleted() {
    let filter = Filter::new(Some("/data"), None).expect("valid filter");
    let o = DiffOptions { filter, ..opts() };
    let src = sorted_by_bytes(vec![entry("data/a", 1), entry("other", 1)]);
    let dst = sorted_by_bytes(vec![entry("data/z", 1), entry("other2", 1)]);
    let actions = run_ok(&src, &dst, o).await;
    assert_eq!(summaries(&actions), ["copy data/a (New)", "delete data/z"]);
}

#[tokio::test]
async fn unsafe_keys_are_skipped_as_refused_for_a_local_destination() {
    let src = sorted_by_bytes(vec![
        entry("../x", 1),
        entry("./a", 1),
        entry("a//b", 1),
        entry("a/../b", 1),
        entry("ok", 1),
    ]);
    let actions = run_ok(&src, &[], local_opts()).await;
    assert_eq!(
        summaries(&actions),
        [
            "refuse ../x",
            "refuse ./a",
            "refuse a/../b",
            "refuse a//b",
            "copy ok (New)"
        ]
    );
    assert_eq!(
        refused_reason(&actions[0]),
        "not a safe local path: a path component is `..`"
    );
    assert_eq!(
        refused_reason(&actions[1]),
        "not a safe local path: a path component is `.`"
    );
    assert_eq!(
        refused_reason(&actions[2]),
        "not a safe local path: a path component is `..`"
    );
    assert_eq!(
        refused_reason(&actions[3]),
        "not a safe local path: a path component is empty (`//` in the key)"
    );
}

#[tokio::test]
async fn datasync_refused_keys_are_skipped_for_an_s3_destination_while_odd_but_valid_keys_pass() {
    let refused = [
        "/abs", "a//b", "a//", "./a", "../a", "a/./b", "a/../b", "a/.", "a/..", ".", "..",
    ];
    let fine = [
        "a b",
        "a..b",
        "...",
        ".hidden",
        "a/.b/",
        "..a",
        "é/日本",
        "tab\there",
    ];
    let src = sorted_by_bytes(refused.iter().chain(&fine).map(|k| entry(k, 1)).collect());
    let actions = run_ok(&src, &[], opts()).await;
    assert_eq!(actions.len(), refused.len() + fine.len());
    for a in &actions {
        let k = a.key();
        if refused.contains(&k) {
            assert_eq!(
                refused_reason(a),
                "DataSync refuses keys that start with `/` or contain `//`, `/./` or `/../`",
                "{k}"
            );
        } else {
            assert!(
                matches!(
                    a,
                    Action::Copy {
                        reason: CopyReason::New,
                        ..
                    }
                ),
                "{k}: {a:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_refused_source_key_leaves_its_destination_copy_alone() {
    let src = [entry("a//b", 1)];
    let dst = [entry("a//b", 2)];
    let actions = run_ok(&src, &dst, opts()).await;
    assert_eq!(summaries(&actions), ["refuse a//b"]);
}

#[tokio::test]
async fn a_file_that_is_also_a_directory_is_skipped_for_a_local_destination() {
    let src = sorted_by_bytes(vec![entry("a", 1), entry("a-x", 1), entry("a/b", 1)]);
    let actions = run_ok(&src, &[], local_opts()).await;
    assert_eq!(
        summaries(&actions),
        ["refuse a", "copy a-x (New)", "copy a/b (New)"]
    );
    assert!(
        refused_reason(&actions[0]).contains("is both a file and a directory"),
        "{}",
        refused_reason(&actions[0])
    );
}

#[tokio::test]
async fn a_file_and_a_directory_of_the_same_name_are_both_copied_to_s3() {
    let src = sorted_by_bytes(vec![entry("a", 1), entry("a-x", 1), entry("a/b", 1)]);
    let actions = run_ok(&src, &[], opts()).await;
    assert_eq!(
        summaries(&actions),
        ["copy a (New)", "copy a-x (New)", "copy a/b (New)"]
    );
}

#[tokio::test]
async fn a_per_key_listing_error_becomes_a_skip_and_the_diff_goes_on() {
    let src = listing(vec![
        Ok(entry("a", 1)),
        Err(unsafe_key_error("b")),
        Ok(entry("c", 1)),
    ]);
    let dst = listing(vec![Ok(entry("d", 1))]);
    let out = run(src, dst, opts()).await;
    let actions: Vec<Action> = out
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("unexpected error: {e}")))
        .collect();
    assert_eq!(
        summaries(&actions),
        ["copy a (New)", "refuse b", "copy c (New)", "delete d"]
    );
    assert_eq!(
        refused_reason(&actions[1]),
        "not a safe key: component is 300 bytes, over the 255-byte limit"
    );
}

#[tokio::test]
async fn skipped_symlinks_and_clashes_reported_by_a_listing_become_skips() {
    let symlink = LocationError::Io {
        location: "/src".into(),
        op: "skip",
        key: "link".into(),
        message: "a symbolic link; skipped".into(),
        transient: false,
    };
    let clash = LocationError::FileDirClash {
        location: "/dst".into(),
        key: "x".into(),
    };
    let src = listing(vec![Err(symlink), Ok(entry("m", 1))]);
    let dst = listing(vec![Ok(entry("n", 1)), Err(clash), Ok(entry("z", 1))]);
    let actions: Vec<Action> = run(src, dst, opts())
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("unexpected error: {e}")))
        .collect();
    assert_eq!(
        summaries(&actions),
        [
            "refuse link",
            "copy m (New)",
            "delete n",
            "refuse x",
            "delete z"
        ]
    );
    assert_eq!(refused_reason(&actions[0]), "a symbolic link; skipped");
    assert_eq!(
        refused_reason(&actions[3]),
        "/dst: key `x` is both a file and a directory"
    );
}

#[tokio::test]
async fn a_fatal_source_listing_error_ends_the_stream_with_that_error() {
    let src = listing(vec![
        Ok(entry("a", 1)),
        Err(fatal_error()),
        Ok(entry("c", 1)),
    ]);
    let dst = listing(vec![Ok(entry("b", 1)), Ok(entry("d", 1))]);
    let out = run(src, dst, opts()).await;
    assert_eq!(out.len(), 2, "nothing may follow the error: {out:?}");
    assert!(matches!(&out[0], Ok(a) if summary(a) == "copy a (New)"));
    match &out[1] {
        Err(LocationError::Io { op, message, .. }) => {
            assert_eq!(*op, "ListObjectsV2");
            assert_eq!(message, "Access Denied");
        }
        other => panic!("expected the listing error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_fatal_destination_listing_error_ends_the_stream_before_any_delete() {
    let src = listing(vec![Ok(entry("a", 1)), Ok(entry("c", 1))]);
    let dst = listing(vec![Err(fatal_error()), Ok(entry("b", 1))]);
    let out = run(src, dst, opts()).await;
    assert_eq!(out.len(), 1, "nothing may follow the error: {out:?}");
    assert!(matches!(
        &out[0],
        Err(LocationError::Io {
            op: "ListObjectsV2",
            ..
        })
    ));
}

#[tokio::test]
async fn a_fatal_error_is_the_last_item_even_when_polled_one_by_one() {
    let src = listing(vec![Err(fatal_error()), Ok(entry("a", 1))]);
    let dst = listing(vec![Ok(entry("b", 1))]);
    let mut stream = diff(src, dst, opts());
    assert!(matches!(stream.next().await, Some(Err(_))));
    assert!(stream.next().await.is_none());
}

/// Actions come out in byte order of their keys: a merge-join of two sorted
/// listings. The source `a` is a file and a directory (`a/b`), so the clash
/// filter turns it into a per-key error; the destination's `0` sorts before
/// it and must be acted on first.
///
/// FAILS with the current diff.rs: `next_action` handles a peeked per-key
/// error before comparing keys, so `refuse a` comes out before `delete 0`.
#[tokio::test]
async fn a_per_key_error_is_reported_in_key_order_among_destination_keys() {
    let src = [entry("a", 1), entry("a/b", 1)];
    let dst = [entry("0", 1)];
    let actions = run_ok(&src, &dst, local_opts()).await;
    assert_eq!(
        summaries(&actions),
        ["delete 0", "refuse a", "copy a/b (New)"]
    );
}

// ---------------------------------------------------------------------------
// diff against a naive model
// ---------------------------------------------------------------------------

/// The listed attributes of one key on one side.
#[derive(Clone, Debug)]
struct Attrs {
    size: u64,
    mtime_ns: Option<i128>,
    uploaded_ns: Option<i128>,
    etag: Option<&'static str>,
}

impl Attrs {
    fn entry(&self, key: &str) -> Entry {
        Entry {
            key: key.to_string(),
            size: self.size,
            modified: self.uploaded_ns.map(at),
            etag: self.etag.map(str::to_string),
            meta: self.mtime_ns.map(|ns| PosixMeta {
                mtime_ns: Some(ns),
                ..PosixMeta::default()
            }),
        }
    }
}

fn attrs() -> impl Strategy<Value = Attrs> {
    (
        0u64..3,
        proptest::option::of(proptest::sample::select(vec![0i128, 400_000, MS, 5 * SEC])),
        proptest::option::of(proptest::sample::select(vec![0i128, MS, 5 * SEC])),
        proptest::option::of(proptest::sample::select(vec!["\"e1\"", "\"e2\""])),
    )
        .prop_map(|(size, mtime_ns, uploaded_ns, etag)| Attrs {
            size,
            mtime_ns,
            uploaded_ns,
            etag,
        })
}

/// A key component from a tiny alphabet (so prefixes and the `-` `.` `/`
/// ordering traps occur often), never `.` or `..`.
fn component() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        proptest::sample::select(vec!['a', 'b', '-', '.', 'é']),
        1..=3,
    )
    .prop_map(|cs| cs.into_iter().collect::<String>())
    .prop_filter("`.` and `..` are refused keys", |c| c != "." && c != "..")
}

/// A valid key: 1 to 3 non-empty components, perhaps a directory marker.
fn valid_key() -> impl Strategy<Value = String> {
    (proptest::collection::vec(component(), 1..=3), any::<bool>()).prop_map(|(parts, marker)| {
        let mut key = parts.join("/");
        if marker {
            key.push('/');
        }
        key
    })
}

/// One key of the pool: whether each side has it, and with what attributes.
type Slot = (String, Option<Attrs>, Option<Attrs>);

fn pool() -> impl Strategy<Value = Vec<Slot>> {
    proptest::collection::vec(
        (
            valid_key(),
            proptest::option::of(attrs()),
            proptest::option::of(attrs()),
        ),
        0..16,
    )
}

fn diff_options() -> impl Strategy<Value = (TransferMode, Overwrite, PreserveDeleted)> {
    (
        proptest::sample::select(vec![TransferMode::Changed, TransferMode::All]),
        proptest::sample::select(vec![Overwrite::Always, Overwrite::Never]),
        proptest::sample::select(vec![PreserveDeleted::Preserve, PreserveDeleted::Remove]),
    )
}

/// One side's entries by key, without a file `x` next to keys under `x/`.
fn side(slots: &[Slot], pick: impl Fn(&Slot) -> Option<&Attrs>) -> BTreeMap<String, Entry> {
    let mut m: BTreeMap<String, Entry> = BTreeMap::new();
    for slot in slots {
        if let Some(a) = pick(slot) {
            m.entry(slot.0.clone()).or_insert_with(|| a.entry(&slot.0));
        }
    }
    let clashing: Vec<String> = m
        .keys()
        .filter(|k| !k.ends_with('/'))
        .filter(|k| {
            let dir = format!("{k}/");
            m.keys().any(|other| other.starts_with(&dir))
        })
        .cloned()
        .collect();
    for k in clashing {
        m.remove(&k);
    }
    m
}

fn check_against_model(
    slots: &[Slot],
    (transfer_mode, overwrite, preserve_deleted): (TransferMode, Overwrite, PreserveDeleted),
    dst_keys_are_paths: bool,
) -> Result<(), TestCaseError> {
    let src = side(slots, |s| s.1.as_ref());
    let dst = side(slots, |s| s.2.as_ref());
    let o = DiffOptions {
        transfer_mode,
        overwrite,
        preserve_deleted,
        filter: Filter::default(),
        dst_keys_are_paths,
        privileges: Default::default(),
    };

    // The naive model: every key of the union, in byte order, decided alone.
    let union: BTreeSet<&String> = src.keys().chain(dst.keys()).collect();
    let expected: Vec<Action> = union
        .into_iter()
        .filter_map(|k| decide(src.get(k), dst.get(k), &o))
        .collect();

    let src_list = sorted_by_bytes(src.values().cloned().collect());
    let dst_list = sorted_by_bytes(dst.values().cloned().collect());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let out = rt.block_on(run(ok_listing(&src_list), ok_listing(&dst_list), o));
    let mut actual = Vec::with_capacity(out.len());
    for r in out {
        actual.push(r.map_err(|e| TestCaseError::fail(format!("diff failed: {e}")))?);
    }

    for w in actual.windows(2) {
        prop_assert!(
            w[0].key().as_bytes() < w[1].key().as_bytes(),
            "keys out of order or repeated: {:?} then {:?}",
            w[0].key(),
            w[1].key()
        );
    }
    prop_assert_eq!(actual, expected);
    Ok(())
}

proptest! {
    #[test]
    fn the_diff_of_random_listings_agrees_with_deciding_each_key_of_the_union(
        slots in pool(),
        o in diff_options(),
    ) {
        check_against_model(&slots, o, false)?;
    }

    #[test]
    fn the_clash_filter_changes_nothing_for_a_local_destination_without_clashes(
        slots in pool(),
        o in diff_options(),
    ) {
        check_against_model(&slots, o, true)?;
    }
}
