//! Turns the raw path bytes of a tar entry into the components to create under the
//! unpack root. Pure; no IO.
//!
//! This is normalisation, not the security boundary: the boundary is the kernel's
//! `RESOLVE_IN_ROOT` resolution in `root`. Cleaning here only gives every entry one
//! canonical spelling, so that `./a`, `/a` and `a` are the same entry and the final
//! component handed to a `*at` call is a plain name (never empty, `.`, `..`, or
//! containing `/`).

/// Splits `raw` into components: empty and `.` components are dropped (which strips
/// a leading `/` or `./`), and `..` removes the previous component but never goes
/// above the root, the same outcome as `..` at the root under `RESOLVE_IN_ROOT` and as
/// Go's `filepath.Clean("/" + name)` that Docker and containerd apply. An empty result
/// names the root itself.
pub(super) fn components(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.contains(&0) {
        // A NUL cannot reach the kernel inside a path; refuse rather than truncate.
        return Err("the path contains a NUL byte");
    }
    let mut out: Vec<&[u8]> = Vec::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            name => out.push(name),
        }
    }
    Ok(out)
}

/// Joins components with `/` into a path relative to the root, for `openat2`.
pub(super) fn join(components: &[&[u8]]) -> Vec<u8> {
    let len = components.iter().map(|c| c.len() + 1).sum();
    let mut out = Vec::with_capacity(len);
    for (i, component) in components.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(component);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(raw: &[u8]) -> Vec<u8> {
        join(&components(raw).expect("no NUL"))
    }

    #[test]
    fn leading_slash_and_dot_are_stripped() {
        assert_eq!(clean(b"./etc/passwd"), b"etc/passwd");
        assert_eq!(clean(b"/etc/passwd"), b"etc/passwd");
        assert_eq!(clean(b"//././/etc//passwd/"), b"etc/passwd");
        assert_eq!(clean(b"usr/./bin"), b"usr/bin");
    }

    #[test]
    fn dotdot_never_climbs_above_the_root() {
        assert_eq!(clean(b"../../etc/passwd"), b"etc/passwd");
        assert_eq!(clean(b"a/../../../b"), b"b");
        assert_eq!(clean(b"a/b/../c"), b"a/c");
        assert_eq!(clean(b"/.."), b"");
    }

    #[test]
    fn the_root_has_no_components() {
        assert!(components(b"./").expect("valid").is_empty());
        assert!(components(b"/").expect("valid").is_empty());
        assert!(components(b"").expect("valid").is_empty());
    }

    #[test]
    fn non_utf8_bytes_are_kept_and_nul_is_refused() {
        assert_eq!(clean(b"caf\xe9/\xff"), b"caf\xe9/\xff");
        assert!(components(b"a\0b").is_err());
    }
}
