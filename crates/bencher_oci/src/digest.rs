//! Content digests (`sha256:<hex>`, `sha512:<hex>`): the validated `Digest` type, a
//! streaming hasher and a verifier for content fetched by digest. Pure; no IO.
//!
//! Only the two algorithms the OCI image spec registers are accepted, and only in their
//! canonical form (lowercase hex of the exact length), because a digest is used as a
//! content address: two spellings of the same digest must never name two blobs.

use std::fmt;
use std::io;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha512};

/// A hash algorithm registered by the OCI image spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    Sha256,
    Sha512,
}

impl DigestAlgorithm {
    /// The name used before the `:` of a digest.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// How many lowercase hex characters an encoded digest of this algorithm has.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DigestAlgorithm {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Self::Sha256),
            "sha512" => Ok(Self::Sha512),
            other => Err(DigestError::UnsupportedAlgorithm(shorten(other))),
        }
    }
}

/// A validated content digest such as `sha256:e3b0c442…`.
///
/// The whole string is kept so `as_str` and `Display` cost nothing, and ordering is the
/// ordering of the canonical strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    value: String,
    algorithm: DigestAlgorithm,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest must not be empty")]
    Empty,
    #[error("digest must have the form `<algorithm>:<hex>` (e.g. `sha256:…`); found no `:`")]
    MissingSeparator,
    #[error("unsupported digest algorithm `{0}`; expected `sha256` or `sha512`")]
    UnsupportedAlgorithm(String),
    #[error("a {algorithm} digest must have {expected} hex characters, got {actual}")]
    WrongLength {
        algorithm: DigestAlgorithm,
        expected: usize,
        actual: usize,
    },
    #[error("digest hex must be lowercase")]
    Uppercase,
    #[error("digest hex may only contain the characters 0-9 and a-f")]
    InvalidHex,
}

/// Content that hashed to something other than the digest it was fetched by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("content digest mismatch: expected {expected}, got {actual}")]
pub struct DigestMismatch {
    pub expected: Digest,
    pub actual: Digest,
}

impl Digest {
    /// The SHA-256 digest of `bytes`, the algorithm registries use for new content.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Self::of(DigestAlgorithm::Sha256, bytes)
    }

    /// The digest of `bytes` with `algorithm`.
    pub fn of(algorithm: DigestAlgorithm, bytes: &[u8]) -> Self {
        let mut hasher = DigestHasher::new(algorithm);
        hasher.update(bytes);
        hasher.finish()
    }

    pub fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// The lowercase hex after the `:`.
    pub fn hex(&self) -> &str {
        // The prefix is `<algorithm>:` by construction.
        &self.value[self.algorithm.as_str().len() + 1..]
    }

    /// The encoded part of the digest, as the OCI spec calls it; the same as `hex`.
    pub fn encoded(&self) -> &str {
        self.hex()
    }

    /// The canonical `<algorithm>:<hex>` string.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// A streaming check that content hashes to this digest.
    pub fn verifier(&self) -> DigestVerifier {
        DigestVerifier {
            expected: self.clone(),
            hasher: DigestHasher::new(self.algorithm),
        }
    }

    /// Checks whole in-memory content against this digest.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), DigestMismatch> {
        let mut verifier = self.verifier();
        verifier.update(bytes);
        verifier.verify()
    }

    fn from_hash_output(algorithm: DigestAlgorithm, output: &[u8]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut value = String::with_capacity(algorithm.as_str().len() + 1 + output.len() * 2);
        value.push_str(algorithm.as_str());
        value.push(':');
        for byte in output {
            value.push(char::from(HEX[usize::from(byte >> 4)]));
            value.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        Self { value, algorithm }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(DigestError::Empty);
        }
        let (algorithm, hex) = s.split_once(':').ok_or(DigestError::MissingSeparator)?;
        let algorithm: DigestAlgorithm = algorithm.parse()?;
        if hex.len() != algorithm.hex_len() {
            return Err(DigestError::WrongLength {
                algorithm,
                expected: algorithm.hex_len(),
                actual: hex.len(),
            });
        }
        for b in hex.bytes() {
            match b {
                b'0'..=b'9' | b'a'..=b'f' => {}
                b'A'..=b'F' => return Err(DigestError::Uppercase),
                _ => return Err(DigestError::InvalidHex),
            }
        }
        Ok(Self {
            value: s.to_owned(),
            algorithm,
        })
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> Self {
        digest.value
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

/// Hashes content as it streams past, for blobs too large to hold in memory.
#[derive(Clone)]
pub struct DigestHasher {
    state: HasherState,
    bytes: u64,
}

#[derive(Clone)]
enum HasherState {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl DigestHasher {
    pub fn new(algorithm: DigestAlgorithm) -> Self {
        let state = match algorithm {
            DigestAlgorithm::Sha256 => HasherState::Sha256(Sha256::new()),
            DigestAlgorithm::Sha512 => HasherState::Sha512(Sha512::new()),
        };
        Self { state, bytes: 0 }
    }

    pub fn algorithm(&self) -> DigestAlgorithm {
        match self.state {
            HasherState::Sha256(_) => DigestAlgorithm::Sha256,
            HasherState::Sha512(_) => DigestAlgorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            HasherState::Sha256(h) => h.update(bytes),
            HasherState::Sha512(h) => h.update(bytes),
        }
        self.bytes = self.bytes.saturating_add(bytes.len() as u64);
    }

    /// How many bytes went in so far, so callers can check a descriptor's size too.
    pub fn bytes_hashed(&self) -> u64 {
        self.bytes
    }

    pub fn finish(self) -> Digest {
        match self.state {
            HasherState::Sha256(h) => {
                Digest::from_hash_output(DigestAlgorithm::Sha256, &h.finalize())
            }
            HasherState::Sha512(h) => {
                Digest::from_hash_output(DigestAlgorithm::Sha512, &h.finalize())
            }
        }
    }
}

impl fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestHasher")
            .field("algorithm", &self.algorithm())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Lets callers `io::copy` a reader into the hasher; writing never fails.
impl io::Write for DigestHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hashes content fetched by digest and checks it at the end.
#[derive(Debug, Clone)]
pub struct DigestVerifier {
    expected: Digest,
    hasher: DigestHasher,
}

impl DigestVerifier {
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    pub fn bytes_hashed(&self) -> u64 {
        self.hasher.bytes_hashed()
    }

    pub fn verify(self) -> Result<(), DigestMismatch> {
        let actual = self.hasher.finish();
        if actual == self.expected {
            Ok(())
        } else {
            Err(DigestMismatch {
                expected: self.expected,
                actual,
            })
        }
    }
}

/// Lets callers `io::copy` a reader into the verifier; writing never fails.
impl io::Write for DigestVerifier {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Error messages echo the offending algorithm name; cap it so hostile input cannot
/// make an error (and the log line it ends up in) arbitrarily large.
fn shorten(s: &str) -> String {
    const MAX: usize = 32;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_SHA512: &str = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

    #[test]
    fn hashes_known_values() {
        assert_eq!(Digest::sha256_of(b"").as_str(), EMPTY_SHA256);
        assert_eq!(
            Digest::of(DigestAlgorithm::Sha512, b"").to_string(),
            EMPTY_SHA512
        );
        assert_eq!(
            Digest::sha256_of(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parses_and_round_trips() {
        for s in [EMPTY_SHA256, EMPTY_SHA512] {
            let d: Digest = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
            assert_eq!(d.encoded(), d.hex());
            assert_eq!(d.hex().len(), d.algorithm().hex_len());
        }
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), DigestAlgorithm::Sha256);
        assert_eq!(d, Digest::sha256_of(b""));
    }

    #[test]
    fn rejects_malformed_digests() {
        let hex64 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases: &[(&str, DigestError)] = &[
            ("", DigestError::Empty),
            (hex64, DigestError::MissingSeparator),
            (
                &format!("md5:{hex64}"),
                DigestError::UnsupportedAlgorithm("md5".into()),
            ),
            (
                &format!("SHA256:{hex64}"),
                DigestError::UnsupportedAlgorithm("SHA256".into()),
            ),
            (
                &format!(":{hex64}"),
                DigestError::UnsupportedAlgorithm(String::new()),
            ),
            (
                "sha256:",
                DigestError::WrongLength {
                    algorithm: DigestAlgorithm::Sha256,
                    expected: 64,
                    actual: 0,
                },
            ),
            (
                &format!("sha256:{}", &hex64[1..]),
                DigestError::WrongLength {
                    algorithm: DigestAlgorithm::Sha256,
                    expected: 64,
                    actual: 63,
                },
            ),
            (
                &format!("sha512:{hex64}"),
                DigestError::WrongLength {
                    algorithm: DigestAlgorithm::Sha512,
                    expected: 128,
                    actual: 64,
                },
            ),
            (
                &format!("sha256:{}", hex64.to_uppercase()),
                DigestError::Uppercase,
            ),
            (&format!("sha256:{}g", &hex64[1..]), DigestError::InvalidHex),
            (&format!("sha256:{} ", &hex64[1..]), DigestError::InvalidHex),
            (&format!("sha256:{}:", &hex64[1..]), DigestError::InvalidHex),
            (
                &format!(" sha256:{hex64}"),
                DigestError::UnsupportedAlgorithm(" sha256".into()),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Digest>().as_ref(), Err(want), "{input:?}");
        }
        // Multi-byte characters: lengths are counted in bytes, and nothing panics.
        let err = format!("sha256:{}é", &hex64[2..]).parse::<Digest>();
        assert!(matches!(err, Err(DigestError::InvalidHex)), "{err:?}");
        let err = format!("sha256:{}é", &hex64[1..]).parse::<Digest>();
        assert!(
            matches!(err, Err(DigestError::WrongLength { actual: 65, .. })),
            "{err:?}"
        );
        let long = format!("{}:{hex64}", "x".repeat(1000));
        match long.parse::<Digest>() {
            Err(DigestError::UnsupportedAlgorithm(a)) => assert!(a.chars().count() <= 33),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arbitrary_input_never_panics() {
        for sample in [EMPTY_SHA256, EMPTY_SHA512] {
            for bytes in crate::manifest::tests::mutations(sample.as_bytes()) {
                let input = String::from_utf8_lossy(&bytes);
                if let Ok(d) = input.parse::<Digest>() {
                    assert_eq!(d.as_str(), input);
                    assert_eq!(d.hex().len(), d.algorithm().hex_len());
                }
            }
        }
    }

    #[test]
    fn serde_is_the_string_form() {
        let d = Digest::sha256_of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        let err = serde_json::from_str::<Digest>("\"sha256:abc\"").unwrap_err();
        assert!(err.to_string().contains("64 hex characters"), "{err}");
        assert!(serde_json::from_str::<Digest>("42").is_err());
    }

    #[test]
    fn orders_by_canonical_string() {
        let a: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        let b: Digest = format!("sha256:{}", "f".repeat(64)).parse().unwrap();
        let c: Digest = format!("sha512:{}", "0".repeat(128)).parse().unwrap();
        let mut v = vec![c.clone(), b.clone(), a.clone()];
        v.sort();
        assert_eq!(v, [a, b, c]);
    }

    #[test]
    fn streaming_matches_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for algorithm in [DigestAlgorithm::Sha256, DigestAlgorithm::Sha512] {
            let mut hasher = DigestHasher::new(algorithm);
            for chunk in data.chunks(333) {
                hasher.update(chunk);
            }
            assert_eq!(hasher.bytes_hashed(), data.len() as u64);
            assert_eq!(hasher.finish(), Digest::of(algorithm, &data));
        }
    }

    #[test]
    fn io_copy_into_hasher() {
        let data = b"some layer bytes".repeat(100);
        let mut hasher = DigestHasher::new(DigestAlgorithm::Sha256);
        io::copy(&mut &data[..], &mut hasher).unwrap();
        assert_eq!(hasher.finish(), Digest::sha256_of(&data));
    }

    #[test]
    fn verifier_accepts_and_rejects() {
        let expected = Digest::sha256_of(b"hello world");
        let mut ok = expected.verifier();
        ok.update(b"hello ");
        ok.update(b"world");
        assert_eq!(ok.bytes_hashed(), 11);
        assert_eq!(ok.verify(), Ok(()));

        let mut bad = expected.verifier();
        bad.update(b"hello there");
        let err = bad.verify().unwrap_err();
        assert_eq!(err.expected, expected);
        assert_eq!(err.actual, Digest::sha256_of(b"hello there"));
        let msg = err.to_string();
        assert!(msg.contains(expected.as_str()) && msg.contains(err.actual.as_str()));

        let sha512 = Digest::of(DigestAlgorithm::Sha512, b"abc");
        assert_eq!(sha512.verify(b"abc"), Ok(()));
        assert!(sha512.verify(b"abd").is_err());
    }
}
