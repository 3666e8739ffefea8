//! Secrets: generation from the OS CSPRNG and hashing for storage. Keys carry about
//! 178 bits of entropy, so one SHA-256 is enough (a slow password hash buys nothing
//! against brute force and would cost every request).

use bencher_types::{ApiToken, RunnerKey, SECRET_LEN};
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

/// `SECRET_LEN` characters of `[0-9A-Za-z]` from the thread-local CSPRNG (ChaCha,
/// seeded from the operating system).
fn random_secret() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), SECRET_LEN)
}

pub fn generate_runner_key() -> RunnerKey {
    RunnerKey::from_random(&random_secret()).expect("alphanumeric secret of the right length")
}

pub fn generate_api_token() -> ApiToken {
    ApiToken::from_random(&random_secret()).expect("alphanumeric secret of the right length")
}

/// What the store keeps of a secret: its SHA-256, hex-encoded.
pub fn hash_secret(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let a = generate_runner_key();
        let b = generate_runner_key();
        assert_ne!(a, b);
        assert!(a.expose_secret().parse::<RunnerKey>().is_ok());
        assert!(
            generate_api_token()
                .expose_secret()
                .starts_with("bencher_user_")
        );
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
