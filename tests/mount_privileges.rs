//! Through a mount of a local directory, a user other than root writes no
//! setuid/setgid bit and no device into that directory (the rule `sync`
//! follows for a bucket's metadata, `location/privilege.rs`): their chmod
//! keeps its other bits, the set-ID ones are dropped; root's are kept.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::mount::{as_nobody, mount};

#[test]
fn set_id_bits_from_another_user_do_not_reach_the_local_directory() {
    common::require_root("running as nobody");
    let src = common::tempdir();
    let m = mount(None, &common::path_str(src.path()), &["--allow-other"]);
    m.reachable_by_others();
    std::fs::create_dir(m.path("shared")).unwrap();
    std::fs::set_permissions(m.path("shared"), std::fs::Permissions::from_mode(0o777)).unwrap();

    let theirs = common::path_str(&m.path("shared/theirs"));
    let out = as_nobody(&[
        "sh",
        "-c",
        "echo x > \"$1\" && chmod 6755 \"$1\"",
        "sh",
        &theirs,
    ]);
    assert_eq!(out.status, 0, "{out:?}");
    let on_disk = std::fs::metadata(src.path().join("shared/theirs")).unwrap();
    assert_eq!(on_disk.uid(), 65534);
    assert_eq!(
        on_disk.mode() & 0o7777,
        0o755,
        "set-ID bits reached the disk"
    );

    std::fs::write(m.path("roots"), b"x").unwrap();
    std::fs::set_permissions(m.path("roots"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let on_disk = std::fs::metadata(src.path().join("roots")).unwrap();
    assert_eq!(on_disk.mode() & 0o7777, 0o4755, "root's own chmod is kept");
    assert_eq!(m.unmount(), Some(0));
}
