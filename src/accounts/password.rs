//! Password hashing with Argon2id (PHC string format).
//!
//! Defaults follow the OWASP password storage cheat sheet's first Argon2id
//! option: m = 19 MiB, t = 2 iterations, p = 1 lane; all three are settings
//! of `[accounts]` (`argon2_memory_kib`, `argon2_iterations`,
//! `argon2_parallelism`). Each stored hash carries its own parameters and a
//! random 16-byte salt, so changing the settings applies to new and changed
//! passwords and old hashes keep verifying.
//!
//! Hashing takes tens of milliseconds of CPU on purpose: callers on the async
//! runtime run it with `tokio::task::spawn_blocking`.

use std::sync::OnceLock;

use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, PasswordVerifier as _, Version};

/// Argon2id parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory per hash, in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

/// The parameters were refused by Argon2 (e.g. less than 8 KiB of memory).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Argon2 parameters: {0}")]
pub struct InvalidParams(String);

/// Hashing failed; with valid parameters this does not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashFailed(String);

/// Hashes and verifies passwords with one set of parameters.
pub struct PasswordHasher {
    argon: Argon2<'static>,
    /// Verified against when the user does not exist, so that an unknown user
    /// costs the same time as a wrong password. Made on first use: startup and
    /// the CLI do not pay for it.
    dummy: OnceLock<String>,
}

impl PasswordHasher {
    pub fn new(params: HashParams) -> Result<PasswordHasher, InvalidParams> {
        let params = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| InvalidParams(e.to_string()))?;
        Ok(PasswordHasher {
            argon: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            dummy: OnceLock::new(),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) for `password`.
    pub fn hash(&self, password: &str) -> Result<String, HashFailed> {
        self.argon
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| HashFailed(e.to_string()))
    }

    /// Whether `password` matches `phc`. A malformed stored hash never matches.
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        self.argon.verify_password(password.as_bytes(), phc).is_ok()
    }

    /// Spends the time of one verification without any account behind it.
    pub fn verify_dummy(&self, password: &str) {
        let dummy = self.dummy.get_or_init(|| {
            // A hash of a random password: nothing typed can match it, and it
            // is never compared with an answer anyway.
            self.hash(&crate::ids::random_alphanumeric(24)).unwrap_or_default()
        });
        let _ = self.verify(password, dummy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cheapest parameters Argon2 allows: tests stay fast.
    pub(crate) const CHEAP: HashParams = HashParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn hashes_verify_and_carry_their_parameters() {
        let hasher = PasswordHasher::new(CHEAP).unwrap();
        let hash = hasher.hash("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{hash}");
        assert!(hasher.verify("correct horse", &hash));
        assert!(!hasher.verify("correct hors", &hash));
        assert!(!hasher.verify("correct horse", "not a hash"));
        // Salted: the same password hashes differently each time.
        assert_ne!(hash, hasher.hash("correct horse").unwrap());
        // A hasher with other parameters still verifies the old hash.
        let other = PasswordHasher::new(HashParams {
            memory_kib: 16,
            ..CHEAP
        })
        .unwrap();
        assert!(other.verify("correct horse", &hash));
        hasher.verify_dummy("anything");
    }

    #[test]
    fn defaults_are_owasp_and_bad_parameters_are_refused() {
        assert_eq!(
            HashParams::default(),
            HashParams {
                memory_kib: 19 * 1024,
                iterations: 2,
                parallelism: 1
            }
        );
        assert!(PasswordHasher::new(HashParams { memory_kib: 1, ..CHEAP }).is_err());
        assert!(PasswordHasher::new(HashParams { iterations: 0, ..CHEAP }).is_err());
        assert!(
            PasswordHasher::new(HashParams {
                parallelism: 0,
                ..CHEAP
            })
            .is_err()
        );
    }
}
