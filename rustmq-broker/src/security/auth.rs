//! Authentication in the hello exchange: username/password against a users file of argon2
//! hashes, and bearer tokens against SHA-256 digests.
//!
//! Neither the users file nor the broker config ever holds a secret in plain text, and no
//! function here logs or returns one: a failure says what failed (unknown user, wrong
//! password, unknown token), never with what.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::SecurityError;

/// The `[auth]` section of the broker config.
///
/// ```toml
/// [auth]
/// required = true                 # refuse a hello without valid credentials or client certificate
/// users_file = "users.toml"       # [users] alice = "$argon2id$v=19$..."
/// max_failures = 3                # failed hellos per connection before it is closed
///
/// [[auth.tokens]]
/// principal = "ci-pipeline"
/// sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// A hello must authenticate: with credentials, or with a verified client certificate.
    pub required: bool,
    /// TOML file mapping user names to argon2 PHC strings, under `[users]`.
    pub users_file: Option<PathBuf>,
    /// Accepted bearer tokens, stored as digests.
    pub tokens: Vec<TokenEntry>,
    /// Failed authentication attempts allowed on one connection; the next failure closes it.
    pub max_failures: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            required: false,
            users_file: None,
            tokens: Vec::new(),
            max_failures: 3,
        }
    }
}

/// One accepted token: the principal it authenticates as and the hex SHA-256 of the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Principal of a connection that presents this token.
    pub principal: String,
    /// Lowercase hex SHA-256 of the token (`rustmq-broker hash-token` prints it).
    pub sha256: String,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, String>,
}

/// Why credentials were refused. The messages go to the client: they name the user but
/// never the password or token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No such user in the users file.
    #[error("authentication failed for user {0:?}: unknown user or wrong password")]
    UnknownUser(String),
    /// The password does not match the user's hash.
    #[error("authentication failed for user {0:?}: unknown user or wrong password")]
    WrongPassword(String),
    /// The token matches no configured digest.
    #[error("authentication failed: unknown token")]
    UnknownToken,
    /// Authentication is required and the hello carried nothing to check.
    #[error("authentication required: send credentials (username/password or token) or a client certificate")]
    Missing,
}

impl AuthFailure {
    /// A short reason for logs (which must tell an unknown user from a wrong password).
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::UnknownUser(_) => "unknown user",
            AuthFailure::WrongPassword(_) => "wrong password",
            AuthFailure::UnknownToken => "unknown token",
            AuthFailure::Missing => "no credentials",
        }
    }
}

/// Checks credentials against the configured users and tokens.
#[derive(Debug, Default)]
pub struct Authenticator {
    /// User name to argon2 PHC string (validated at load); shared with the blocking threads
    /// that check passwords.
    users: Arc<BTreeMap<String, String>>,
    /// Password checks running at once (see [`verify_password`](Self::verify_password)).
    password_checks: PasswordChecks,
    /// Password checks run so far (argon2 computed), for tests.
    checks_run: std::sync::atomic::AtomicU64,
    tokens: Vec<(String, [u8; 32])>,
    /// Whether a hello must authenticate.
    pub required: bool,
    /// Failures allowed per connection.
    pub max_failures: u32,
}

impl Authenticator {
    /// Loads the users file and token digests named by `settings`.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, SecurityError> {
        let users = match &settings.users_file {
            Some(path) => load_users(path)?,
            None => BTreeMap::new(),
        };
        let tokens = settings
            .tokens
            .iter()
            .map(|t| {
                parse_digest(&t.sha256)
                    .map(|d| (t.principal.clone(), d))
                    .ok_or_else(|| {
                        SecurityError::Invalid(format!(
                            "auth.tokens: the sha256 of principal {:?} is not 64 hex digits",
                            t.principal
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            users: Arc::new(users),
            password_checks: PasswordChecks::default(),
            checks_run: Default::default(),
            tokens,
            required: settings.required,
            max_failures: settings.max_failures,
        })
    }

    /// Whether any user or token is configured.
    pub fn has_credentials(&self) -> bool {
        !self.users.is_empty() || !self.tokens.is_empty()
    }

    /// [`check_password`](Self::check_password) on a blocking thread, at most as many at once
    /// as the machine has cores: a check is argon2 (tens of milliseconds of CPU and 19 MiB),
    /// which on the runtime's threads would hold up every connection they serve, and which
    /// unauthenticated peers can ask for.
    pub async fn verify_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<String, AuthFailure> {
        let _turn = self
            .password_checks
            .0
            .acquire()
            .await
            .map_err(|_| AuthFailure::WrongPassword(username.to_owned()))?;
        self.checks_run
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let users = Arc::clone(&self.users);
        let (user, pass) = (username.to_owned(), password.to_owned());
        tokio::task::spawn_blocking(move || check_password(&users, &user, &pass))
            .await
            .unwrap_or_else(|_| Err(AuthFailure::WrongPassword(username.to_owned())))
    }

    /// Password checks [`verify_password`](Self::verify_password) has started so far.
    #[doc(hidden)]
    pub fn password_checks_run(&self) -> u64 {
        self.checks_run.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes every turn of [`verify_password`](Self::verify_password) until the guard is
    /// dropped, as checks filling them would: for tests of what waits behind them.
    #[doc(hidden)]
    pub async fn hold_password_checks(&self) -> tokio::sync::OwnedSemaphorePermit {
        let PasswordChecks(turns, all) = &self.password_checks;
        Arc::clone(turns)
            .acquire_many_owned(*all)
            .await
            .expect("the turns are never closed")
    }

    /// Checks a username and password; the principal is the username. Blocks for the argon2
    /// check: async callers use [`verify_password`](Self::verify_password).
    pub fn check_password(&self, username: &str, password: &str) -> Result<String, AuthFailure> {
        check_password(&self.users, username, password)
    }

    /// Checks a bearer token; the principal is the one configured for its digest.
    pub fn check_token(&self, token: &str) -> Result<String, AuthFailure> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.tokens
            .iter()
            .find(|(_, d)| bool::from(d.ct_eq(&digest)))
            .map(|(principal, _)| principal.clone())
            .ok_or(AuthFailure::UnknownToken)
    }
}

/// Checks `password` against `username`'s hash in `users` (argon2: it blocks).
fn check_password(
    users: &BTreeMap<String, String>,
    username: &str,
    password: &str,
) -> Result<String, AuthFailure> {
    let Some(phc) = users.get(username) else {
        // Spend the same time as for a known user, so timing does not reveal user names.
        let _ = Argon2::default().verify_password(password.as_bytes(), &dummy_hash());
        return Err(AuthFailure::UnknownUser(username.to_owned()));
    };
    let hash =
        PasswordHash::new(phc).map_err(|_| AuthFailure::WrongPassword(username.to_owned()))?;
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .map(|()| username.to_owned())
        .map_err(|_| AuthFailure::WrongPassword(username.to_owned()))
}

/// The semaphore of the password checks running at once: one per core.
#[derive(Debug)]
struct PasswordChecks(Arc<tokio::sync::Semaphore>, u32);

impl Default for PasswordChecks {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let cores = u32::try_from(cores).unwrap_or(u32::MAX);
        Self(Arc::new(tokio::sync::Semaphore::new(cores as usize)), cores)
    }
}

fn dummy_hash() -> PasswordHash<'static> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash_password("not a real password").unwrap_or_default());
    PasswordHash::new(phc).unwrap_or_else(|_| {
        PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$ZmFrZWZha2VmYWtlZmFrZQ")
            .expect("static hash parses")
    })
}

fn load_users(path: &Path) -> Result<BTreeMap<String, String>, SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SecurityError::Invalid(format!("cannot read users file {}: {e}", path.display()))
    })?;
    // The parser's own message quotes the offending line, which may hold a password: only
    // its description and the line's number are told.
    let file: UsersFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        SecurityError::Invalid(format!(
            "invalid users file {}{at}: {}",
            path.display(),
            e.message()
        ))
    })?;
    for (user, phc) in &file.users {
        // Only the user is named: a plain-text password put here by mistake must not be echoed.
        if PasswordHash::new(phc).is_err() {
            return Err(SecurityError::Invalid(format!(
                "users file {}: the entry of user {user:?} is not a PHC password hash \
                 (make one with `rustmq-broker hash-password`)",
                path.display()
            )));
        }
    }
    Ok(file.users)
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// An argon2id PHC string of `password` with a random salt, for the users file.
pub fn hash_password(password: &str) -> Result<String, SecurityError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecurityError::Invalid(format!("cannot hash the password: {e}")))
}

/// The lowercase hex SHA-256 of `token`, for `[[auth.tokens]] sha256`.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator(dir: &tempfile::TempDir) -> Authenticator {
        let users = dir.path().join("users.toml");
        std::fs::write(
            &users,
            format!(
                "[users]\nalice = \"{}\"\n",
                hash_password("s3cret").unwrap()
            ),
        )
        .unwrap();
        Authenticator::from_settings(&AuthSettings {
            users_file: Some(users),
            tokens: vec![TokenEntry {
                principal: "ci".into(),
                sha256: hash_token("tok-123"),
            }],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn passwords_and_tokens_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(&dir);
        assert_eq!(auth.check_password("alice", "s3cret").unwrap(), "alice");
        assert_eq!(
            auth.check_password("alice", "wrong"),
            Err(AuthFailure::WrongPassword("alice".into()))
        );
        assert_eq!(
            auth.check_password("bob", "s3cret"),
            Err(AuthFailure::UnknownUser("bob".into()))
        );
        assert_eq!(auth.check_token("tok-123").unwrap(), "ci");
        assert_eq!(auth.check_token("tok-124"), Err(AuthFailure::UnknownToken));
    }

    #[test]
    fn a_plain_text_password_in_the_users_file_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        std::fs::write(&users, "[users]\nalice = \"hunter2\"\n").unwrap();
        let err = Authenticator::from_settings(&AuthSettings {
            users_file: Some(users),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("alice") && !err.contains("hunter2"), "{err}");
    }

    /// A users file that does not parse is refused without quoting its lines: the line in
    /// error may hold a password (an entry outside `[users]`, one without quotes).
    #[test]
    fn a_users_file_that_does_not_parse_is_refused_without_echoing_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.toml");
        for text in ["alice = \"hunter2\"\n", "[users]\nalice = hunter2\n"] {
            std::fs::write(&users, text).unwrap();
            let err = Authenticator::from_settings(&AuthSettings {
                users_file: Some(users.clone()),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains("line ") && !err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn token_digests_must_be_hex() {
        let err = Authenticator::from_settings(&AuthSettings {
            tokens: vec![TokenEntry {
                principal: "ci".into(),
                sha256: "plain-token".into(),
            }],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
        assert_eq!(
            hash_token("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }
}
