//! Image references (`ubuntu`, `localhost:6610/proj:v1`, `host/a/b@sha256:…`) parsed
//! with Docker's grammar and defaults, and the validated repository names, tags and
//! manifest references a registry server routes on. Pure; no IO.
//!
//! The grammar follows distribution/reference, the one `docker`, `skopeo` and
//! containerd agree on:
//!
//! ```text
//! reference      := name [ ":" tag ] [ "@" digest ]
//! name           := [ registry "/" ] repository
//! registry       := host [ ":" port ]      (host: DNS name, IPv4, or [IPv6])
//! repository     := component ( "/" component )*
//! component      := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag            := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! ```
//!
//! The first `/`-separated part of a name is a registry only when it looks like one
//! (contains `.` or `:`, is `localhost`, or has uppercase letters, which no repository
//! can); otherwise the registry is `docker.io`, and one-part names there get the
//! `library/` prefix of official images.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, DigestError};

/// Registry used when a reference names none, as Docker does.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// The old spelling of the default registry, normalized to `DEFAULT_REGISTRY`.
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";

/// The host that actually serves the registry API for `docker.io`.
const DEFAULT_REGISTRY_API_HOST: &str = "registry-1.docker.io";

/// Repository prefix of official images on the default registry.
const OFFICIAL_REPOSITORY_PREFIX: &str = "library/";

/// Tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// Longest `registry/repository` (for a `Reference`) or repository (for a
/// `RepositoryName`), as distribution enforces.
pub const MAX_NAME_LEN: usize = 255;

/// Longest tag, from the tag grammar.
pub const MAX_TAG_LEN: usize = 128;

/// A fully qualified image reference.
///
/// `tag` and `digest` are what the reference said: `ubuntu` parses with neither and
/// displays as `docker.io/library/ubuntu`; `tag_or_latest` and `target` apply the
/// `latest` default. `Display` prints the canonical form, which parses back to an equal
/// value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Reference {
    /// Registry host with optional port, e.g. `docker.io` or `localhost:6610`.
    pub registry: String,
    /// Repository path within the registry, e.g. `library/ubuntu`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// What to fetch from a repository: a tag to resolve, or a digest to fetch directly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Tag(String),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("image reference must not be empty")]
    Empty,
    #[error("image reference has no repository name before its tag or digest")]
    MissingName,
    #[error(
        "image reference `{0}` is a bare 64-character hex string, which is ambiguous with an image id; use `<name>@sha256:<hex>`"
    )]
    AmbiguousHex(String),
    #[error(
        "invalid registry `{0}` in image reference: expected a host name or IP address with an optional port"
    )]
    InvalidRegistry(String),
    #[error("invalid repository in image reference")]
    Repository(#[from] RepositoryNameError),
    #[error("image name is {0} characters long; at most {MAX_NAME_LEN} are allowed")]
    NameTooLong(usize),
    #[error("invalid tag in image reference")]
    Tag(#[from] TagError),
    #[error("invalid digest in image reference")]
    Digest(#[from] DigestError),
}

impl Reference {
    /// The tag, or `latest` when the reference named none.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }

    /// What to fetch: the digest when there is one (it pins the content, so it wins
    /// over a tag), else the tag, else `latest`.
    pub fn target(&self) -> Target {
        match &self.digest {
            Some(digest) => Target::Digest(digest.clone()),
            None => Target::Tag(self.tag_or_latest().to_owned()),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same image pinned to `digest`, keeping the tag for display.
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The host (and port) that serves the registry API: the registry itself, except
    /// for `docker.io`, whose API lives on another host.
    pub fn registry_api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DEFAULT_REGISTRY_API_HOST
        } else {
            &self.registry
        }
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        // Docker refuses these so an image id is never mistaken for a repository name.
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::AmbiguousHex(s.to_owned()));
        }

        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.parse::<Digest>()?)),
            None => (s, None),
        };
        // A `:` is a tag separator only after the last `/`; before it, it is a port.
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if rest[colon..].find('/').is_none() => {
                (&rest[..colon], Some(rest[colon + 1..].parse::<Tag>()?))
            }
            _ => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::MissingName);
        }

        let (registry, remainder) = split_registry(name);
        if registry != DEFAULT_REGISTRY && !is_registry(registry) {
            return Err(ReferenceError::InvalidRegistry(registry.to_owned()));
        }
        let registry = if registry == LEGACY_DEFAULT_REGISTRY {
            DEFAULT_REGISTRY
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !remainder.contains('/') {
            format!("{OFFICIAL_REPOSITORY_PREFIX}{remainder}")
        } else {
            remainder.to_owned()
        };
        let repository: RepositoryName = repository.parse()?;

        let name_len = registry.len() + 1 + repository.as_str().len();
        if name_len > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong(name_len));
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository: repository.into(),
            tag: tag.map(String::from),
            digest,
        })
    }
}

/// Splits `name` into registry and repository with Docker's rule (see the module docs).
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_REGISTRY, name),
    }
}

/// `host[:port]` where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
fn is_registry(s: &str) -> bool {
    let (host_ok, port) = if let Some(bracketed) = s.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return false;
        };
        let ipv6_ok =
            !inside.is_empty() && inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        (ipv6_ok, port)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        };
        (host.split('.').all(is_domain_component), port)
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(c: &str) -> bool {
    let b = c.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        }
        _ => false,
    }
}

impl TryFrom<String> for Reference {
    type Error = ReferenceError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Reference> for String {
    fn from(reference: Reference) -> Self {
        reference.to_string()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Prints the tag or digest as it goes in `/v2/<name>/manifests/<target>`.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => f.write_str(tag),
            Self::Digest(digest) => write!(f, "{digest}"),
        }
    }
}

/// A repository path within a registry (`library/ubuntu`, `<project-uuid>`), as it
/// appears in `/v2/<name>/...`: lowercase components joined by `/`, at most 255
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepositoryName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepositoryNameError {
    #[error("repository name must not be empty")]
    Empty,
    #[error("repository name is {0} characters long; at most {MAX_NAME_LEN} are allowed")]
    TooLong(usize),
    #[error("repository name `{0}` must be lowercase")]
    Uppercase(String),
    #[error(
        "repository name must not have an empty path component (a leading, trailing or double `/`)"
    )]
    EmptyComponent,
    #[error(
        "repository name component `{0}` is invalid: use lowercase letters and digits, separated by `.`, `_`, `__` or hyphens, starting and ending with a letter or digit"
    )]
    InvalidComponent(String),
}

impl RepositoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RepositoryName {
    type Err = RepositoryNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(RepositoryNameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(RepositoryNameError::TooLong(s.len()));
        }
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(RepositoryNameError::Uppercase(s.to_owned()));
        }
        for component in s.split('/') {
            if component.is_empty() {
                return Err(RepositoryNameError::EmptyComponent);
            }
            if !is_path_component(component.as_bytes()) {
                return Err(RepositoryNameError::InvalidComponent(component.to_owned()));
            }
        }
        Ok(Self(s.to_owned()))
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*` without a regex engine: runs of
/// lowercase letters and digits, separated by exactly `.`, `_`, `__` or any number of
/// `-`, with a letter or digit at both ends.
fn is_path_component(c: &[u8]) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (c.first(), c.last()) {
        (Some(&first), Some(&last)) if alnum(first) && alnum(last) => {}
        _ => return false,
    }
    let mut i = 0;
    while i < c.len() {
        if alnum(c[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < c.len() && !alnum(c[i]) {
            i += 1;
        }
        let separator = &c[start..i];
        let ok = matches!(separator, b"." | b"_" | b"__") || separator.iter().all(|&b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl TryFrom<String> for RepositoryName {
    type Error = RepositoryNameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RepositoryName> for String {
    fn from(name: RepositoryName) -> Self {
        name.0
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag must not be empty")]
    Empty,
    #[error("tag is {0} characters long; at most {MAX_TAG_LEN} are allowed")]
    TooLong(usize),
    #[error(
        "tag `{0}` is invalid: use letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
    )]
    Invalid(String),
}

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag used when a reference names neither tag nor digest.
    pub fn latest() -> Self {
        Self(DEFAULT_TAG.to_owned())
    }
}

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let bytes = s.as_bytes();
        let Some(&first) = bytes.first() else {
            return Err(TagError::Empty);
        };
        if bytes.len() > MAX_TAG_LEN {
            return Err(TagError::TooLong(bytes.len()));
        }
        if !word(first) || !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') {
            return Err(TagError::Invalid(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for Tag {
    type Error = TagError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Tag> for String {
    fn from(tag: Tag) -> Self {
        tag.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of `/v2/<name>/manifests/<reference>`: a tag or a digest. The two
/// never overlap, because a tag cannot contain `:` and a digest always does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ManifestRef {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestRefError {
    #[error("manifest reference is not a valid tag")]
    Tag(#[from] TagError),
    #[error("manifest reference is not a valid digest")]
    Digest(#[from] DigestError),
}

impl FromStr for ManifestRef {
    type Err = ManifestRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Self::Digest(s.parse()?))
        } else {
            Ok(Self::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(tag) => write!(f, "{tag}"),
            Self::Digest(digest) => write!(f, "{digest}"),
        }
    }
}

impl From<Tag> for ManifestRef {
    fn from(tag: Tag) -> Self {
        Self::Tag(tag)
    }
}

impl From<Digest> for ManifestRef {
    fn from(digest: Digest) -> Self {
        Self::Digest(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn digest() -> Digest {
        format!("sha256:{HEX}").parse().unwrap()
    }

    fn parse(s: &str) -> Reference {
        s.parse()
            .unwrap_or_else(|e| panic!("`{s}` should parse: {e:?}"))
    }

    #[test]
    fn parses_good_references() {
        let d = format!("sha256:{HEX}");
        // (input, registry, repository, tag, has digest, canonical display)
        type Case<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, bool, String);
        let cases: &[Case] = &[
            (
                "ubuntu",
                "docker.io",
                "library/ubuntu",
                None,
                false,
                "docker.io/library/ubuntu".into(),
            ),
            (
                "ubuntu:22.04",
                "docker.io",
                "library/ubuntu",
                Some("22.04"),
                false,
                "docker.io/library/ubuntu:22.04".into(),
            ),
            (
                "library/ubuntu",
                "docker.io",
                "library/ubuntu",
                None,
                false,
                "docker.io/library/ubuntu".into(),
            ),
            (
                "docker.io/ubuntu",
                "docker.io",
                "library/ubuntu",
                None,
                false,
                "docker.io/library/ubuntu".into(),
            ),
            (
                "index.docker.io/ubuntu",
                "docker.io",
                "library/ubuntu",
                None,
                false,
                "docker.io/library/ubuntu".into(),
            ),
            (
                "bencherdev/bencher",
                "docker.io",
                "bencherdev/bencher",
                None,
                false,
                "docker.io/bencherdev/bencher".into(),
            ),
            (
                "localhost:6610/my-project:v1",
                "localhost:6610",
                "my-project",
                Some("v1"),
                false,
                "localhost:6610/my-project:v1".into(),
            ),
            (
                "localhost/my-project",
                "localhost",
                "my-project",
                None,
                false,
                "localhost/my-project".into(),
            ),
            (
                &format!("localhost:6610/67e55044-10b1-426f-9247-bb680e5fe0c8@{d}"),
                "localhost:6610",
                "67e55044-10b1-426f-9247-bb680e5fe0c8",
                None,
                true,
                format!("localhost:6610/67e55044-10b1-426f-9247-bb680e5fe0c8@{d}"),
            ),
            (
                &format!("registry.example.com:5000/a/b/c:tag@{d}"),
                "registry.example.com:5000",
                "a/b/c",
                Some("tag"),
                true,
                format!("registry.example.com:5000/a/b/c:tag@{d}"),
            ),
            (
                &format!("ubuntu@{d}"),
                "docker.io",
                "library/ubuntu",
                None,
                true,
                format!("docker.io/library/ubuntu@{d}"),
            ),
            (
                "ghcr.io/owner/repo_name.with-dots__x:TAG_1.0-rc",
                "ghcr.io",
                "owner/repo_name.with-dots__x",
                Some("TAG_1.0-rc"),
                false,
                "ghcr.io/owner/repo_name.with-dots__x:TAG_1.0-rc".into(),
            ),
            (
                "127.0.0.1:5000/foo",
                "127.0.0.1:5000",
                "foo",
                None,
                false,
                "127.0.0.1:5000/foo".into(),
            ),
            (
                "[::1]:5000/foo:bar",
                "[::1]:5000",
                "foo",
                Some("bar"),
                false,
                "[::1]:5000/foo:bar".into(),
            ),
            (
                "[fe80::1]/foo",
                "[fe80::1]",
                "foo",
                None,
                false,
                "[fe80::1]/foo".into(),
            ),
            (
                "a---b/c",
                "docker.io",
                "a---b/c",
                None,
                false,
                "docker.io/a---b/c".into(),
            ),
            // Uppercase first component: a host name, as in Docker.
            (
                "MyRegistry/foo",
                "MyRegistry",
                "foo",
                None,
                false,
                "MyRegistry/foo".into(),
            ),
            // No `/`: `localhost:6610` is the image `localhost` with tag `6610`.
            (
                "localhost:6610",
                "docker.io",
                "library/localhost",
                Some("6610"),
                false,
                "docker.io/library/localhost:6610".into(),
            ),
        ];
        for (input, registry, repository, tag, has_digest, display) in cases {
            let r = parse(input);
            assert_eq!(r.registry, *registry, "{input}");
            assert_eq!(r.repository, *repository, "{input}");
            assert_eq!(r.tag.as_deref(), *tag, "{input}");
            assert_eq!(r.digest.is_some(), *has_digest, "{input}");
            assert_eq!(r.to_string(), *display, "{input}");
            // Display round-trips.
            assert_eq!(parse(&r.to_string()), r, "{input}");
        }
    }

    #[test]
    fn defaults_and_targets() {
        let r = parse("ubuntu");
        assert_eq!(r.tag_or_latest(), "latest");
        assert_eq!(r.target(), Target::Tag("latest".into()));
        assert_eq!(r.name(), "docker.io/library/ubuntu");
        assert_eq!(r.registry_api_host(), "registry-1.docker.io");

        let r = parse("localhost:6610/p:v1");
        assert_eq!(r.target(), Target::Tag("v1".into()));
        assert_eq!(r.target().to_string(), "v1");
        assert_eq!(r.registry_api_host(), "localhost:6610");

        // The digest wins when both are given.
        let r = parse(&format!("localhost:6610/p:v1@sha256:{HEX}"));
        assert_eq!(r.target(), Target::Digest(digest()));
        assert_eq!(r.tag_or_latest(), "v1");
        assert_eq!(r.target().to_string(), format!("sha256:{HEX}"));

        let pinned = parse("localhost:6610/p:v1").with_digest(digest());
        assert_eq!(
            pinned.to_string(),
            format!("localhost:6610/p:v1@sha256:{HEX}")
        );
    }

    #[test]
    fn rejects_bad_references() {
        type Check = fn(&ReferenceError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, ReferenceError::Empty)),
            (HEX, |e| matches!(e, ReferenceError::AmbiguousHex(_))),
            (":tag", |e| matches!(e, ReferenceError::MissingName)),
            (&format!("@sha256:{HEX}"), |e| {
                matches!(e, ReferenceError::MissingName)
            }),
            ("Ubuntu", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::Uppercase(_))
                )
            }),
            ("docker.io/Library/ubuntu", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::Uppercase(_))
                )
            }),
            ("ubuntu:", |e| {
                matches!(e, ReferenceError::Tag(TagError::Empty))
            }),
            ("ubuntu:-x", |e| {
                matches!(e, ReferenceError::Tag(TagError::Invalid(_)))
            }),
            ("ubuntu:.x", |e| {
                matches!(e, ReferenceError::Tag(TagError::Invalid(_)))
            }),
            ("ubuntu:a+b", |e| {
                matches!(e, ReferenceError::Tag(TagError::Invalid(_)))
            }),
            ("ubuntu:a:b", |e| {
                // `ubuntu:a` is no valid registry-less name with a tag `b`.
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::InvalidComponent(_))
                )
            }),
            (&format!("ubuntu:{}", "a".repeat(129)), |e| {
                matches!(e, ReferenceError::Tag(TagError::TooLong(129)))
            }),
            ("ubuntu@", |e| {
                matches!(e, ReferenceError::Digest(DigestError::Empty))
            }),
            ("ubuntu@sha256:abc", |e| {
                matches!(e, ReferenceError::Digest(DigestError::WrongLength { .. }))
            }),
            (&format!("ubuntu@md5:{HEX}"), |e| {
                matches!(
                    e,
                    ReferenceError::Digest(DigestError::UnsupportedAlgorithm(_))
                )
            }),
            (&format!("ubuntu@sha256:{HEX}@sha256:{HEX}"), |e| {
                matches!(e, ReferenceError::Digest(_))
            }),
            ("/ubuntu", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::EmptyComponent)
                )
            }),
            ("a//b", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::EmptyComponent)
                )
            }),
            ("localhost:6610/", |e| {
                matches!(e, ReferenceError::Repository(RepositoryNameError::Empty))
            }),
            ("localhost:6610/a/", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::EmptyComponent)
                )
            }),
            ("-a/b", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::InvalidComponent(_))
                )
            }),
            ("a_/b", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::InvalidComponent(_))
                )
            }),
            ("a___b", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::InvalidComponent(_))
                )
            }),
            ("a..b", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::InvalidComponent(_))
                )
            }),
            ("a._b", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::InvalidComponent(_))
                )
            }),
            ("ubuntu latest", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::InvalidComponent(_))
                )
            }),
            ("ünïcode", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::InvalidComponent(_))
                )
            }),
            ("-bad.host/foo", |e| {
                matches!(e, ReferenceError::InvalidRegistry(_))
            }),
            ("bad..host/foo", |e| {
                matches!(e, ReferenceError::InvalidRegistry(_))
            }),
            ("host:port/foo", |e| {
                matches!(e, ReferenceError::InvalidRegistry(_))
            }),
            ("host:/foo", |e| {
                matches!(e, ReferenceError::InvalidRegistry(_))
            }),
            ("host:1:2/foo", |e| {
                matches!(e, ReferenceError::InvalidRegistry(_))
            }),
            ("[::1/foo", |e| {
                matches!(e, ReferenceError::InvalidRegistry(_))
            }),
            ("[]:5000/foo", |e| {
                matches!(e, ReferenceError::InvalidRegistry(_))
            }),
            ("_:_", |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::InvalidComponent(_))
                )
            }),
            ("[::1]x/foo", |e| {
                matches!(e, ReferenceError::InvalidRegistry(_))
            }),
            ("ho_st.com/foo", |e| {
                matches!(e, ReferenceError::InvalidRegistry(_))
            }),
            (&format!("example.com/{}", "a".repeat(250)), |e| {
                matches!(e, ReferenceError::NameTooLong(262))
            }),
            (&format!("example.com/{}", "a".repeat(256)), |e| {
                matches!(
                    e,
                    ReferenceError::Repository(RepositoryNameError::TooLong(256))
                )
            }),
        ];
        for (input, check) in cases {
            match input.parse::<Reference>() {
                Ok(r) => panic!("`{input}` should not parse, got {r:?}"),
                Err(e) => assert!(check(&e), "`{input}`: unexpected {e:?}"),
            }
        }
        // Exactly at the limit is fine.
        let at_limit = format!("example.com/{}", "a".repeat(255 - 12));
        assert_eq!(parse(&at_limit).name().len(), 255);
    }

    #[test]
    fn error_messages_keep_the_source() {
        let err = "ubuntu@sha256:abc".parse::<Reference>().unwrap_err();
        assert_eq!(err.to_string(), "invalid digest in image reference");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("64 hex characters"), "{source}");
    }

    #[test]
    fn serde_is_the_canonical_string() {
        let r = parse("ubuntu:22.04");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"docker.io/library/ubuntu:22.04\"");
        assert_eq!(serde_json::from_str::<Reference>(&json).unwrap(), r);
        assert!(serde_json::from_str::<Reference>("\"UPPER\"").is_err());
    }

    #[test]
    fn repository_names() {
        for good in [
            "a",
            "library/ubuntu",
            "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "a/b/c/d",
            "a.b_c__d---e",
            "0",
        ] {
            let name: RepositoryName = good.parse().unwrap();
            assert_eq!(name.as_str(), good);
            assert_eq!(name.to_string(), good);
        }
        assert_eq!(
            "".parse::<RepositoryName>(),
            Err(RepositoryNameError::Empty)
        );
        assert_eq!(
            "a".repeat(256).parse::<RepositoryName>(),
            Err(RepositoryNameError::TooLong(256))
        );
        assert!("a".repeat(255).parse::<RepositoryName>().is_ok());
        assert!(matches!(
            "A/b".parse::<RepositoryName>(),
            Err(RepositoryNameError::Uppercase(_))
        ));
        for bad in ["/a", "a/", "a//b"] {
            assert_eq!(
                bad.parse::<RepositoryName>(),
                Err(RepositoryNameError::EmptyComponent),
                "{bad}"
            );
        }
        for bad in [
            "a-", "-a", "_a", "a_", ".a", "a.", "a..b", "a.-b", "a___b", "a:b", "a@b", "a b",
        ] {
            assert!(
                matches!(
                    bad.parse::<RepositoryName>(),
                    Err(RepositoryNameError::InvalidComponent(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn tags() {
        for good in [
            "latest",
            "v1",
            "_",
            "1.0.0-rc.1",
            "A_b-C.d",
            &"x".repeat(128),
        ] {
            assert_eq!(good.parse::<Tag>().unwrap().as_str(), good);
        }
        assert_eq!("".parse::<Tag>(), Err(TagError::Empty));
        assert_eq!("x".repeat(129).parse::<Tag>(), Err(TagError::TooLong(129)));
        for bad in [".a", "-a", "a/b", "a:b", "a@b", "a b", "é"] {
            assert!(
                matches!(bad.parse::<Tag>(), Err(TagError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(Tag::latest().as_str(), "latest");
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let samples = [
            format!("registry.example.com:5000/a/b-c/d__e:tag.1@sha256:{HEX}"),
            format!("[fe80::1]:5000/x@sha256:{HEX}"),
            "ubuntu:22.04".to_owned(),
            "ünï/cödé:tåg".to_owned(),
        ];
        let mut parsed = 0usize;
        for sample in &samples {
            for bytes in crate::manifest::tests::mutations(sample.as_bytes()) {
                let input = String::from_utf8_lossy(&bytes);
                if let Ok(r) = input.parse::<Reference>() {
                    // Whatever parses displays to a form that parses to the same value.
                    assert_eq!(parse(&r.to_string()), r, "{input}");
                    parsed += 1;
                }
                for segment in input.split('/') {
                    if let Ok(m) = segment.parse::<ManifestRef>() {
                        assert_eq!(m.to_string().parse::<ManifestRef>().unwrap(), m);
                    }
                }
                let _ = input.parse::<RepositoryName>();
                let _ = input.parse::<Tag>();
            }
        }
        assert!(parsed > 0);
    }

    #[test]
    fn manifest_refs() {
        assert_eq!(
            "v1".parse::<ManifestRef>().unwrap(),
            ManifestRef::Tag("v1".parse().unwrap())
        );
        let by_digest = format!("sha256:{HEX}");
        assert_eq!(
            by_digest.parse::<ManifestRef>().unwrap(),
            ManifestRef::Digest(digest())
        );
        assert_eq!(
            by_digest.parse::<ManifestRef>().unwrap().to_string(),
            by_digest
        );
        assert!(matches!(
            "sha256:abc".parse::<ManifestRef>(),
            Err(ManifestRefError::Digest(_))
        ));
        assert!(matches!(
            "bad tag".parse::<ManifestRef>(),
            Err(ManifestRefError::Tag(_))
        ));
        assert!(matches!(
            "".parse::<ManifestRef>(),
            Err(ManifestRefError::Tag(TagError::Empty))
        ));
    }
}
