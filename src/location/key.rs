//! Object keys and relative local paths, and the one rule deciding which keys
//! are safe to turn into paths.
//!
//! A key names an object relative to a location's root, with `/` between
//! components and a single trailing `/` marking a directory marker. Before a
//! key from a bucket becomes a file under a local root it must not be able to
//! escape that root or confuse the filesystem: no leading `/`, no `.` or `..`
//! component, no empty component, no NUL byte, and nothing longer than the
//! usual Linux limits (255 bytes per name, 4095 bytes per path). Every place
//! that maps keys to paths goes through [`check_key`], so the rule lives here
//! once. The same rule covers what DataSync itself refuses (keys starting with
//! `/` or containing `//`, `/./` or `/../`).

use std::path::{Component, Path, PathBuf};

/// Longest file or directory name Linux filesystems accept (NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest path the kernel accepts, without the terminating NUL (PATH_MAX - 1).
pub const MAX_PATH_BYTES: usize = 4095;

/// Why a key cannot be used as a relative local path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnsafeReason {
    Empty,
    Absolute,
    EmptyComponent,
    DotComponent,
    DotDotComponent,
    Nul,
    /// Length in bytes of the offending component.
    ComponentTooLong(usize),
    /// Length in bytes of the whole key.
    TooLong(usize),
    NotUtf8,
}

impl std::fmt::Display for UnsafeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnsafeReason::Empty => write!(f, "the key is empty"),
            UnsafeReason::Absolute => write!(f, "the key starts with `/`"),
            UnsafeReason::EmptyComponent => {
                write!(f, "a path component is empty (`//` in the key)")
            }
            UnsafeReason::DotComponent => write!(f, "a path component is `.`"),
            UnsafeReason::DotDotComponent => write!(f, "a path component is `..`"),
            UnsafeReason::Nul => write!(f, "the key contains a NUL byte"),
            UnsafeReason::ComponentTooLong(n) => write!(
                f,
                "component is {n} bytes, over the {MAX_COMPONENT_BYTES}-byte limit"
            ),
            UnsafeReason::TooLong(n) => {
                write!(f, "key is {n} bytes, over the {MAX_PATH_BYTES}-byte limit")
            }
            UnsafeReason::NotUtf8 => write!(f, "the path is not valid UTF-8"),
        }
    }
}

impl std::error::Error for UnsafeReason {}

/// Checks a key (relative to a location root; a trailing '/' marks a
/// directory marker and is allowed).
pub fn check_key(key: &str) -> Result<(), UnsafeReason> {
    if key.is_empty() {
        return Err(UnsafeReason::Empty);
    }
    if key.len() > MAX_PATH_BYTES {
        return Err(UnsafeReason::TooLong(key.len()));
    }
    if key.starts_with('/') {
        return Err(UnsafeReason::Absolute);
    }
    if key.contains('\0') {
        return Err(UnsafeReason::Nul);
    }
    strip_marker(key).split('/').try_for_each(check_component)
}

/// One component between slashes; `Component::Normal` is exactly what is left
/// once these cases are ruled out (on Unix, where `/` is the only separator).
fn check_component(name: &str) -> Result<(), UnsafeReason> {
    match name {
        "" => Err(UnsafeReason::EmptyComponent),
        "." => Err(UnsafeReason::DotComponent),
        ".." => Err(UnsafeReason::DotDotComponent),
        _ if name.len() > MAX_COMPONENT_BYTES => Err(UnsafeReason::ComponentTooLong(name.len())),
        _ => Ok(()),
    }
}

/// The key without its directory-marker slash (only one: `a//` must still
/// show up as an empty component).
fn strip_marker(key: &str) -> &str {
    key.strip_suffix('/').unwrap_or(key)
}

/// key -> relative PathBuf (no leading '/', trailing '/' dropped). Errors as
/// [`check_key`].
pub fn key_to_relpath(key: &str) -> Result<PathBuf, UnsafeReason> {
    check_key(key)?;
    Ok(PathBuf::from(strip_marker(key)))
}

/// Relative path (as produced by a directory walk) -> key; `is_dir` appends
/// '/'. Non-UTF-8 -> `NotUtf8`.
///
/// The result is run through [`check_key`] too, so a path can never produce a
/// key that [`key_to_relpath`] would refuse (for instance a name over 255
/// bytes on a filesystem that allows it).
pub fn relpath_to_key(path: &Path, is_dir: bool) -> Result<String, UnsafeReason> {
    let mut key = String::new();
    for component in path.components() {
        let name = component_name(component)?;
        if !key.is_empty() {
            key.push('/');
        }
        key.push_str(name);
    }
    if key.is_empty() {
        return Err(UnsafeReason::Empty);
    }
    if is_dir {
        key.push('/');
    }
    check_key(&key)?;
    Ok(key)
}

/// The UTF-8 name of a path component, refusing anything but a plain name.
fn component_name(component: Component<'_>) -> Result<&str, UnsafeReason> {
    match component {
        Component::Normal(name) => name.to_str().ok_or(UnsafeReason::NotUtf8),
        Component::CurDir => Err(UnsafeReason::DotComponent),
        Component::ParentDir => Err(UnsafeReason::DotDotComponent),
        Component::RootDir | Component::Prefix(_) => Err(UnsafeReason::Absolute),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_keys_and_directory_markers_are_safe() {
        for key in [
            "a",
            "a/b",
            "a/b/c.txt",
            "a/",
            "a/b/",
            "...",
            ".a",
            "a..b",
            "a/.hidden/",
        ] {
            assert_eq!(check_key(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn the_empty_key_is_refused() {
        assert_eq!(check_key(""), Err(UnsafeReason::Empty));
    }

    #[test]
    fn keys_starting_with_a_slash_are_absolute() {
        for key in ["/", "/a", "/a/", "//a"] {
            assert_eq!(check_key(key), Err(UnsafeReason::Absolute), "{key}");
        }
    }

    #[test]
    fn double_slashes_make_an_empty_component() {
        for key in ["a//b", "a//", "a/b//", "a//b/"] {
            assert_eq!(check_key(key), Err(UnsafeReason::EmptyComponent), "{key}");
        }
    }

    #[test]
    fn dot_components_are_refused_anywhere() {
        for key in [".", "./", "./a", "a/.", "a/./", "a/./b"] {
            assert_eq!(check_key(key), Err(UnsafeReason::DotComponent), "{key}");
        }
    }

    #[test]
    fn dot_dot_components_are_refused_anywhere() {
        for key in ["..", "../", "../a", "a/..", "a/../", "a/../b"] {
            assert_eq!(check_key(key), Err(UnsafeReason::DotDotComponent), "{key}");
        }
    }

    #[test]
    fn nul_bytes_are_refused() {
        assert_eq!(check_key("a\0b"), Err(UnsafeReason::Nul));
        assert_eq!(check_key("a/\0"), Err(UnsafeReason::Nul));
    }

    #[test]
    fn a_component_of_255_bytes_is_fine_but_256_is_not() {
        let ok = "x".repeat(MAX_COMPONENT_BYTES);
        let long = "x".repeat(MAX_COMPONENT_BYTES + 1);
        assert_eq!(check_key(&format!("a/{ok}/")), Ok(()));
        assert_eq!(
            check_key(&format!("a/{long}/b")),
            Err(UnsafeReason::ComponentTooLong(256))
        );
    }

    #[test]
    fn component_length_counts_bytes_not_characters() {
        // 128 two-byte characters are 256 bytes.
        let name = "é".repeat(128);
        assert_eq!(check_key(&name), Err(UnsafeReason::ComponentTooLong(256)));
    }

    #[test]
    fn a_key_of_4095_bytes_is_fine_but_4096_is_not() {
        let part = "x".repeat(200);
        let mut key = vec![part.as_str(); 20].join("/"); // 4019 bytes
        key.push('/');
        key.push_str(&"y".repeat(MAX_PATH_BYTES - key.len()));
        assert_eq!(key.len(), MAX_PATH_BYTES);
        assert_eq!(check_key(&key), Ok(()));
        key.push('/');
        assert_eq!(check_key(&key), Err(UnsafeReason::TooLong(4096)));
    }

    #[test]
    fn reasons_read_as_plain_sentences() {
        assert_eq!(
            UnsafeReason::DotDotComponent.to_string(),
            "a path component is `..`"
        );
        assert_eq!(
            UnsafeReason::ComponentTooLong(300).to_string(),
            "component is 300 bytes, over the 255-byte limit"
        );
        assert_eq!(
            UnsafeReason::TooLong(5000).to_string(),
            "key is 5000 bytes, over the 4095-byte limit"
        );
    }

    #[test]
    fn key_to_relpath_drops_the_marker_slash() {
        assert_eq!(key_to_relpath("a/b/c"), Ok(PathBuf::from("a/b/c")));
        assert_eq!(key_to_relpath("a/b/"), Ok(PathBuf::from("a/b")));
    }

    #[test]
    fn key_to_relpath_refuses_what_check_key_refuses() {
        assert_eq!(key_to_relpath("../etc"), Err(UnsafeReason::DotDotComponent));
        assert_eq!(key_to_relpath("/etc"), Err(UnsafeReason::Absolute));
    }

    #[test]
    fn relpath_to_key_joins_components_and_marks_directories() {
        assert_eq!(relpath_to_key(Path::new("a/b"), false), Ok("a/b".into()));
        assert_eq!(relpath_to_key(Path::new("a/b"), true), Ok("a/b/".into()));
    }

    #[test]
    fn relpath_to_key_refuses_paths_that_leave_the_root() {
        assert_eq!(
            relpath_to_key(Path::new("/a"), false),
            Err(UnsafeReason::Absolute)
        );
        assert_eq!(
            relpath_to_key(Path::new("a/../b"), false),
            Err(UnsafeReason::DotDotComponent)
        );
        assert_eq!(
            relpath_to_key(Path::new("./a"), false),
            Err(UnsafeReason::DotComponent)
        );
        assert_eq!(
            relpath_to_key(Path::new(""), true),
            Err(UnsafeReason::Empty)
        );
    }

    #[test]
    fn relpath_to_key_refuses_names_over_the_limit() {
        let long = "x".repeat(MAX_COMPONENT_BYTES + 1);
        assert_eq!(
            relpath_to_key(Path::new(&long), false),
            Err(UnsafeReason::ComponentTooLong(256))
        );
    }

    #[test]
    fn relpath_to_key_refuses_non_utf8_names() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(OsStr::from_bytes(b"a/\xff\xfe"));
        assert_eq!(relpath_to_key(path, false), Err(UnsafeReason::NotUtf8));
    }

    /// Keys made of mostly harmless components, with the odd `.`, `..` or
    /// empty one mixed in so that both outcomes of `check_key` get exercised.
    fn any_key() -> impl Strategy<Value = String> {
        let component = prop_oneof![
            8 => "[a-zA-Z0-9 ._~é*-]{1,12}",
            1 => Just(".".to_string()),
            1 => Just("..".to_string()),
            1 => Just(String::new()),
        ];
        (prop::collection::vec(component, 1..6), any::<bool>()).prop_map(|(parts, dir)| {
            let key = parts.join("/");
            if dir {
                key + "/"
            } else {
                key
            }
        })
    }

    proptest! {
        #[test]
        fn accepted_keys_become_plain_relative_paths_and_round_trip(key in any_key()) {
            prop_assume!(check_key(&key).is_ok());
            let path = key_to_relpath(&key).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(path.is_relative());
            prop_assert!(path.components().all(|c| matches!(c, Component::Normal(_))));
            let back = relpath_to_key(&path, key.ends_with('/'));
            prop_assert_eq!(back, Ok(key.clone()));
        }

        #[test]
        fn any_string_either_is_refused_or_maps_to_plain_components(key in ".{0,40}") {
            if let Ok(path) = key_to_relpath(&key) {
                prop_assert!(path.components().all(|c| matches!(c, Component::Normal(_))));
                let back = relpath_to_key(&path, key.ends_with('/'));
                prop_assert_eq!(back, Ok(key.clone()));
            }
        }
    }
}
