//! `mount -t fuse.syncmount LOCATION DIR -o OPTIONS` and `/etc/fstab`:
//! mount(8) runs `/sbin/mount.fuse.syncmount LOCATION DIR [-sfnv] -o OPTS`
//! (install it as a link to the syncmount binary). Invoked under that
//! name, syncmount turns the mount options into `syncmount mount`'s flags
//! and runs that (which detaches once the mount is ready, as mount(8)
//! expects of a helper).

use std::ffi::{OsStr, OsString};

/// Names mount(8) runs a helper of ours by.
const HELPER_NAMES: [&str; 2] = ["mount.fuse.syncmount", "mount.syncmount"];

/// Options taking a value, as `name=value`: `syncmount mount`'s flag of
/// the same name (`_` for `-`). `state_dir` and `config` are global flags.
const VALUED: [&str; 17] = [
    "endpoint_url",
    "region",
    "profile",
    "role_arn",
    "metadata_ttl",
    "cache_size",
    "cache_dir",
    "cache_dir_size",
    "uid",
    "gid",
    "file_mode",
    "dir_mode",
    "max_rename_objects",
    "log_file",
    "metrics_addr",
    "state_dir",
    "config",
];

/// Options that are flags of `syncmount mount`.
const FLAGS: [&str; 4] = [
    "allow_other",
    "allow_root",
    "listing_attributes",
    "read_only",
];

/// Generic mount(8), fstab and systemd options with nothing to do here
/// (the mount is always nodev and nosuid; atime is never kept).
const IGNORED: &[&str] = &[
    "defaults", "rw", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev",
    "nofail", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime",
];

/// What a helper invocation asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Helper {
    /// Not invoked as a mount helper.
    No,
    /// `-f` (fake): do everything but mount.
    Fake,
    /// Run syncmount with these arguments.
    Run(Vec<OsString>),
}

/// `argv` (with argv[0]) as `syncmount`'s own arguments when invoked as a
/// mount helper; an error names the option it does not know.
pub fn helper_args(argv: &[OsString]) -> Result<Helper, String> {
    let name = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(OsStr::to_str)
        .unwrap_or_default();
    if !HELPER_NAMES.contains(&name) {
        return Ok(Helper::No);
    }
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut fake = false;
    let mut rest = argv[1..].iter();
    while let Some(a) = rest.next() {
        match a.to_str() {
            Some("-o") => {
                let opts = rest.next().ok_or("-o needs a value")?;
                let opts = opts
                    .to_str()
                    .ok_or("mount options must be UTF-8")?
                    .to_string();
                options.extend(
                    opts.split(',')
                        .filter(|o| !o.is_empty())
                        .map(str::to_string),
                );
            }
            Some(o) if o.starts_with("-o") => options.extend(
                o[2..]
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string),
            ),
            // sloppy, no mtab, verbose: nothing to do.
            Some("-s" | "-n" | "-v") => {}
            Some("-f") => fake = true,
            Some(o) if o.starts_with('-') => {
                return Err(format!("{name}: unknown argument `{o}`"));
            }
            _ => positional.push(a.clone()),
        }
    }
    let [location, mountpoint] = positional.as_slice() else {
        return Err(format!(
            "{name}: expected LOCATION MOUNTPOINT [-o OPTIONS], got {} arguments",
            positional.len()
        ));
    };
    let mut global: Vec<OsString> = Vec::new();
    let mut flags: Vec<OsString> = Vec::new();
    for o in &options {
        let (key, value) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        let flag = format!("--{}", key.replace('_', "-"));
        match (key, value) {
            ("ro", None) => flags.push("--read-only".into()),
            (k, None) if IGNORED.contains(&k) => {}
            (k, _) if k.starts_with("x-") || k == "comment" => {}
            ("state_dir" | "config", Some(v)) => {
                global.push(flag.into());
                global.push(v.into());
            }
            (k, Some(v)) if VALUED.contains(&k) => {
                flags.push(flag.into());
                flags.push(v.into());
            }
            (k, None) if FLAGS.contains(&k) => flags.push(flag.into()),
            (k, None) if VALUED.contains(&k) => {
                return Err(format!("{name}: mount option `{k}` needs a value ({k}=…)"));
            }
            (k, Some(_)) if FLAGS.contains(&k) => {
                return Err(format!("{name}: mount option `{k}` takes no value"));
            }
            _ => {
                return Err(format!(
                    "{name}: unknown mount option `{o}` (known: {}, {}, ro; ignored: {}, x-*)",
                    VALUED.join("=…, ") + "=…",
                    FLAGS.join(", "),
                    IGNORED.join(", ")
                ));
            }
        }
    }
    if fake {
        return Ok(Helper::Fake);
    }
    let mut args = global;
    args.push("mount".into());
    args.push(location.clone());
    args.push(mountpoint.clone());
    args.extend(flags);
    Ok(Helper::Run(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn fstab_options_become_mount_flags_and_generic_ones_are_ignored() {
        let got = helper_args(&argv(&[
            "/sbin/mount.fuse.syncmount",
            "s3://b/p",
            "/mnt/b",
            "-o",
            "rw,_netdev,nofail,x-systemd.automount,allow_other,endpoint_url=http://h:9000,metadata_ttl=5s,state_dir=/var/lib/x,ro",
        ]));
        assert_eq!(
            got,
            Ok(Helper::Run(argv(&[
                "--state-dir",
                "/var/lib/x",
                "mount",
                "s3://b/p",
                "/mnt/b",
                "--allow-other",
                "--endpoint-url",
                "http://h:9000",
                "--metadata-ttl",
                "5s",
                "--read-only",
            ])))
        );
        assert_eq!(
            helper_args(&argv(&["syncmount", "mount", "a", "b"])),
            Ok(Helper::No)
        );
        assert_eq!(
            helper_args(&argv(&["mount.syncmount", "a", "b", "-f", "-o", "ro"])),
            Ok(Helper::Fake)
        );
    }

    #[test]
    fn a_bad_option_or_argument_is_named() {
        let e = helper_args(&argv(&["mount.syncmount", "a", "b", "-o", "bogus"])).unwrap_err();
        assert!(e.contains("`bogus`"), "{e}");
        let e = helper_args(&argv(&["mount.syncmount", "a", "b", "-o", "region"])).unwrap_err();
        assert!(e.contains("`region` needs a value"), "{e}");
        let e =
            helper_args(&argv(&["mount.syncmount", "a", "b", "-o", "allow_other=1"])).unwrap_err();
        assert!(e.contains("takes no value"), "{e}");
        let e = helper_args(&argv(&["mount.syncmount", "a"])).unwrap_err();
        assert!(e.contains("LOCATION MOUNTPOINT"), "{e}");
    }
}
