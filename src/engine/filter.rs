//! DataSync's include and exclude filters ("simple patterns").
//!
//! A filter is a string of patterns separated by `|`. `*` is the only
//! wildcard and matches any run of characters, `/` included; everything else
//! matches itself, case-sensitively. Each key is matched as the path
//! `"/" + key` (a directory marker without its trailing `/`). A pattern that
//! starts with `/` is anchored at the location root; any other pattern may
//! match at any depth. A pattern matching a folder matches everything under
//! it too, so `/dir` and `/dir/` both select the folder `dir` and its
//! contents, but not `/dirx`. Exclude wins over include. When there are
//! include patterns, only what they match is selected, plus the directory
//! markers leading down to it, so included data keeps its parent folders.
//!
//! The same decision serves the transfer and the deletion of extra keys at
//! the destination: what a filter leaves out is neither copied nor deleted.

use std::fmt;

/// DataSync's limit on the length of one include or exclude filter string.
pub const MAX_FILTER_CHARS: usize = 102_400;

/// Which of a task's two filters a pattern or error belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterKind {
    Include,
    Exclude,
}

impl fmt::Display for FilterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FilterKind::Include => "include",
            FilterKind::Exclude => "exclude",
        })
    }
}

/// Why a filter string was refused; each message says what DataSync allows.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error(
        "{kind} filter is {chars} characters long; DataSync allows at most 102,400 characters"
    )]
    TooLong { kind: FilterKind, chars: usize },
    #[error(
        "{kind} filter has an empty pattern between `|`s (pattern number {position}); \
         every pattern between `|`s must be non-empty"
    )]
    EmptyPattern { kind: FilterKind, position: usize },
    #[error("{kind} filter contains a NUL character; DataSync does not allow NUL in filters")]
    Nul { kind: FilterKind },
    #[error(
        "include pattern `{pattern}` has `*` before its last character; \
         DataSync allows `*` only as the last character of an include pattern"
    )]
    IncludeStarNotLast { pattern: String },
}

/// One compiled pattern.
#[derive(Clone, Debug)]
struct Pattern {
    /// Glob matched against the whole path.
    glob: String,
    /// `glob` + "/*": matches when `glob` matches a leading folder.
    under: String,
    /// For anchored patterns, the part before a trailing `*`: any folder
    /// whose path + "/" starts this text leads down to possible matches.
    anchored_literal: Option<String>,
}

impl Pattern {
    fn compile(text: &str) -> Pattern {
        // `/dir/` means the same as `/dir` (DataSync documents both forms).
        let body = text.strip_suffix('/').unwrap_or(text);
        if text.starts_with('/') {
            let literal = body.strip_suffix('*').unwrap_or(body);
            return Pattern::new(body.to_string(), Some(literal.to_string()));
        }
        // A leading `*` already absorbs any leading folders, and matching it
        // against the whole path keeps DataSync's `*/tmp` ("tmp at any level")
        // matching a top-level `/tmp` too. Other unanchored patterns must
        // start right after a `/`, which `*/` in front expresses.
        let glob = if body.starts_with('*') {
            body.to_string()
        } else {
            format!("*/{body}")
        };
        Pattern::new(glob, None)
    }

    fn new(glob: String, anchored_literal: Option<String>) -> Pattern {
        Pattern {
            under: format!("{glob}/*"),
            glob,
            anchored_literal,
        }
    }

    /// Whether the pattern matches `path` itself or one of its leading
    /// folders (`/a` matches `/a/b/c`, not `/ab`).
    fn matches(&self, path: &str) -> bool {
        glob_match(&self.glob, path) || glob_match(&self.under, path)
    }

    /// Whether the folder `dir_path` leads down to something this pattern
    /// could match. Unanchored patterns can match below any folder.
    fn leads_to_match(&self, dir_path: &str) -> bool {
        match &self.anchored_literal {
            None => true,
            Some(literal) => literal
                .strip_prefix(dir_path)
                .is_some_and(|rest| rest.starts_with('/')),
        }
    }
}

/// Include and exclude patterns of a task. The default selects everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    includes: Vec<Pattern>,
    excludes: Vec<Pattern>,
}

impl Filter {
    /// Parses DataSync filter strings. `None` or an empty string means no
    /// filter of that kind.
    pub fn new(include: Option<&str>, exclude: Option<&str>) -> Result<Filter, FilterError> {
        Ok(Filter {
            includes: parse(FilterKind::Include, include)?,
            excludes: parse(FilterKind::Exclude, exclude)?,
        })
    }

    /// Whether a key (relative to the location root, no leading '/', dir
    /// markers end with '/') is selected for transfer (and for deletion at
    /// the destination).
    pub fn selects(&self, key: &str) -> bool {
        // The root itself is where filters apply, never what they filter.
        if key.is_empty() {
            return true;
        }
        let is_dir = key.ends_with('/');
        let path = format!("/{}", key.strip_suffix('/').unwrap_or(key));
        if self.excludes.iter().any(|p| p.matches(&path)) {
            return false;
        }
        self.includes.is_empty()
            || self.includes.iter().any(|p| p.matches(&path))
            || (is_dir && self.includes.iter().any(|p| p.leads_to_match(&path)))
    }

    pub fn is_empty(&self) -> bool {
        self.includes.is_empty() && self.excludes.is_empty()
    }
}

/// Splits and validates one filter string.
fn parse(kind: FilterKind, filter: Option<&str>) -> Result<Vec<Pattern>, FilterError> {
    let Some(filter) = filter.filter(|f| !f.is_empty()) else {
        return Ok(Vec::new());
    };
    let chars = filter.chars().count();
    if chars > MAX_FILTER_CHARS {
        return Err(FilterError::TooLong { kind, chars });
    }
    if filter.contains('\0') {
        return Err(FilterError::Nul { kind });
    }
    filter
        .split('|')
        .enumerate()
        .map(|(i, text)| validate(kind, i + 1, text).map(|()| Pattern::compile(text)))
        .collect()
}

fn validate(kind: FilterKind, position: usize, text: &str) -> Result<(), FilterError> {
    if text.is_empty() {
        return Err(FilterError::EmptyPattern { kind, position });
    }
    // DataSync scans only what include patterns name, so it refuses a `*`
    // anywhere but at the end of one.
    let before_last = text.strip_suffix('*').unwrap_or(text);
    if kind == FilterKind::Include && before_last.contains('*') {
        return Err(FilterError::IncludeStarNotLast {
            pattern: text.to_string(),
        });
    }
    Ok(())
}

/// Whole-string match of `glob` (only `*` is special) against `text`.
///
/// The classic two-pointer algorithm: on a mismatch, let the most recent `*`
/// swallow one more character and retry from there. Earlier stars never need
/// revisiting, so the cost is at most len(glob) * len(text), never
/// exponential.
fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t) = (glob.as_bytes(), text.as_bytes());
    let (mut gi, mut ti) = (0, 0);
    // Where the last `*` was seen and the text position it resumes from.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if gi < g.len() && g[gi] == b'*' {
            star = Some((gi, ti));
            gi += 1;
        } else if gi < g.len() && g[gi] == t[ti] {
            gi += 1;
            ti += 1;
        } else if let Some((sg, st)) = star {
            star = Some((sg, st + 1));
            gi = sg + 1;
            ti = st + 1;
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: Option<&str>, exclude: Option<&str>) -> Filter {
        match Filter::new(include, exclude) {
            Ok(f) => f,
            Err(e) => panic!("filter refused: {e}"),
        }
    }

    fn excluding(pattern: &str) -> Filter {
        filter(None, Some(pattern))
    }

    fn including(pattern: &str) -> Filter {
        filter(Some(pattern), None)
    }

    #[test]
    fn no_filter_selects_everything() {
        let f = Filter::default();
        assert!(f.is_empty());
        for key in ["a", "a/", "a/b/c", ".git/x"] {
            assert!(f.selects(key), "{key}");
        }
    }

    #[test]
    fn none_and_empty_strings_mean_no_filter() {
        assert!(filter(None, None).is_empty());
        assert!(filter(Some(""), Some("")).is_empty());
        assert!(!excluding("*.tmp").is_empty());
    }

    #[test]
    fn star_matches_any_run_of_characters_including_slashes() {
        let f = excluding("/a*z");
        assert!(!f.selects("az"));
        assert!(!f.selects("abcz"));
        assert!(!f.selects("a/b/c/z"));
        assert!(f.selects("zaz"));
    }

    #[test]
    fn other_characters_match_only_themselves() {
        let f = excluding("/a?b[c]");
        assert!(!f.selects("a?b[c]"));
        assert!(f.selects("axbc"));
    }

    #[test]
    fn matching_is_case_sensitive() {
        let f = excluding("/folderA");
        assert!(!f.selects("folderA/x"));
        assert!(f.selects("FolderA/x"));
    }

    #[test]
    fn anchored_patterns_match_only_from_the_root() {
        let f = excluding("/tmp");
        assert!(!f.selects("tmp"));
        assert!(f.selects("a/tmp"));
    }

    #[test]
    fn unanchored_patterns_match_at_any_depth() {
        let f = excluding(".git");
        assert!(!f.selects(".git/"));
        assert!(!f.selects("x/.git"));
        assert!(!f.selects("x/y/.git/config"));
        assert!(f.selects("x/a.git"));
        assert!(f.selects("x/.gitignore"));
    }

    #[test]
    fn unanchored_star_patterns_match_file_names_at_any_depth() {
        let f = excluding("*.tmp");
        assert!(!f.selects("x.tmp"));
        assert!(!f.selects("a/b/x.tmp"));
        assert!(f.selects("a/b/x.tmpl"));
    }

    #[test]
    fn star_slash_name_matches_that_name_at_every_level_including_the_top() {
        let f = excluding("*/.snapshot");
        assert!(!f.selects(".snapshot/"));
        assert!(!f.selects("a/b/.snapshot/x"));
        assert!(f.selects("a/b/my.snapshot"));
    }

    #[test]
    fn a_folder_pattern_matches_the_folder_and_everything_under_it() {
        for pattern in ["/dir", "/dir/"] {
            let f = excluding(pattern);
            assert!(!f.selects("dir"), "{pattern}");
            assert!(!f.selects("dir/"), "{pattern}");
            assert!(!f.selects("dir/x/y"), "{pattern}");
            assert!(f.selects("dirx"), "{pattern}");
            assert!(f.selects("dirx/y"), "{pattern}");
        }
    }

    #[test]
    fn a_folder_pattern_with_a_trailing_star_matches_only_the_contents() {
        let f = excluding("/dir/*");
        assert!(f.selects("dir/"));
        assert!(!f.selects("dir/x"));
    }

    #[test]
    fn the_root_pattern_matches_everything() {
        let f = excluding("/");
        assert!(!f.selects("a"));
        assert!(!f.selects("a/b/"));
    }

    #[test]
    fn the_root_key_itself_is_always_selected() {
        assert!(excluding("*").selects(""));
        assert!(including("/a").selects(""));
    }

    #[test]
    fn patterns_are_separated_by_pipes() {
        let f = excluding("*/temp|*/tmp");
        assert!(!f.selects("temp/x"));
        assert!(!f.selects("a/tmp"));
        assert!(f.selects("a/temps"));
    }

    #[test]
    fn with_includes_only_matching_keys_are_selected() {
        let f = including("/important_folder_1|/important_folder_2");
        assert!(f.selects("important_folder_1/a"));
        assert!(f.selects("important_folder_2/"));
        assert!(!f.selects("other/a"));
        assert!(!f.selects("important_folder_10/a"));
    }

    #[test]
    fn include_patterns_may_end_with_a_star() {
        let f = including("/documents*|/code*");
        assert!(f.selects("documents2024/x"));
        assert!(f.selects("code"));
        assert!(!f.selects("docs/x"));
    }

    #[test]
    fn folders_leading_to_included_data_are_kept() {
        let f = including("/a/b");
        assert!(f.selects("a/"));
        assert!(f.selects("a/b/"));
        assert!(f.selects("a/b/c"));
        assert!(!f.selects("a/c"));
        assert!(!f.selects("a/c/"));
        assert!(!f.selects("ab/"));
        // Only directory markers are kept as ancestors, not files of that name.
        assert!(!f.selects("a"));
    }

    #[test]
    fn the_folder_of_an_include_ending_in_slash_star_is_kept() {
        let f = including("/folder-to-transfer/*");
        assert!(f.selects("folder-to-transfer/"));
        assert!(f.selects("folder-to-transfer/x/y"));
        assert!(!f.selects("other/"));
    }

    #[test]
    fn unanchored_includes_keep_every_folder_since_a_match_may_lie_below() {
        let f = including("keep*");
        assert!(f.selects("a/b/"));
        assert!(f.selects("a/keep.txt"));
        assert!(!f.selects("a/b/drop.txt"));
    }

    #[test]
    fn exclude_wins_over_include() {
        let f = filter(Some("/data"), Some("*.tmp|/data/cache"));
        assert!(f.selects("data/a.txt"));
        assert!(!f.selects("data/a.tmp"));
        assert!(!f.selects("data/cache/x"));
        assert!(!f.selects("data/cache/"));
    }

    #[test]
    fn an_excluded_folder_is_not_kept_as_an_ancestor_of_an_include() {
        let f = filter(Some("/a/b"), Some("/a"));
        assert!(!f.selects("a/"));
        assert!(!f.selects("a/b/c"));
    }

    #[test]
    fn an_include_with_a_star_before_its_end_is_refused() {
        let err = Filter::new(Some("/ok|/a*b"), None).unwrap_err();
        assert_eq!(
            err,
            FilterError::IncludeStarNotLast {
                pattern: "/a*b".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "include pattern `/a*b` has `*` before its last character; \
             DataSync allows `*` only as the last character of an include pattern"
        );
        assert!(Filter::new(Some("*.txt"), None).is_err());
        assert!(Filter::new(Some("/a**"), None).is_err());
    }

    #[test]
    fn an_exclude_may_have_stars_anywhere() {
        assert!(Filter::new(None, Some("*a*b*")).is_ok());
    }

    #[test]
    fn an_empty_pattern_between_pipes_is_refused() {
        for bad in ["a||b", "|a", "a|", "|"] {
            let err = Filter::new(None, Some(bad)).unwrap_err();
            assert!(matches!(err, FilterError::EmptyPattern { .. }), "{bad}");
        }
        let err = Filter::new(Some("/a||/b"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "include filter has an empty pattern between `|`s (pattern number 2); \
             every pattern between `|`s must be non-empty"
        );
    }

    #[test]
    fn a_filter_of_102400_characters_is_accepted_but_one_more_is_refused() {
        let ok = format!("/{}", "x".repeat(MAX_FILTER_CHARS - 1));
        assert!(Filter::new(Some(&ok), Some(&ok)).is_ok());
        let long = format!("{ok}x");
        let err = Filter::new(None, Some(&long)).unwrap_err();
        assert_eq!(
            err,
            FilterError::TooLong {
                kind: FilterKind::Exclude,
                chars: 102_401
            }
        );
        assert!(err.to_string().contains("at most 102,400 characters"));
    }

    #[test]
    fn the_length_limit_counts_characters_not_bytes() {
        let multibyte = format!("/{}", "é".repeat(MAX_FILTER_CHARS - 1));
        assert!(Filter::new(None, Some(&multibyte)).is_ok());
    }

    #[test]
    fn a_nul_character_in_a_filter_is_refused() {
        let err = Filter::new(None, Some("/a\0b")).unwrap_err();
        assert_eq!(
            err,
            FilterError::Nul {
                kind: FilterKind::Exclude
            }
        );
    }

    #[test]
    fn glob_matching_stays_fast_on_many_stars() {
        let glob = format!("{}b", "*a".repeat(50));
        let text = "a".repeat(4000);
        assert!(!glob_match(&glob, &text));
        assert!(glob_match(&glob, &format!("{text}b")));
    }

    /// Obviously-correct (exponential) reference for `glob_match`.
    fn naive_match(g: &[u8], t: &[u8]) -> bool {
        match g.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| naive_match(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && naive_match(rest, &t[1..]),
        }
    }

    proptest::proptest! {
        #[test]
        fn two_pointer_matching_agrees_with_the_naive_definition(
            glob in "[ab/*]{0,8}", text in "[ab/]{0,10}"
        ) {
            let expected = naive_match(glob.as_bytes(), text.as_bytes());
            proptest::prop_assert_eq!(glob_match(&glob, &text), expected);
        }
    }

    #[test]
    fn glob_match_handles_empty_and_star_only_globs() {
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(glob_match("*", ""));
        assert!(glob_match("**", "abc"));
        assert!(glob_match("a*", "a"));
        assert!(!glob_match("a*b", "ab/c"));
    }
}
