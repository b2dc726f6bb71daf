//! Secrets that never print: the cluster secret and any other sensitive text (the REST token).

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

use super::SecurityError;

/// What every secret prints as, in `Debug`, `Display` and configuration listings (Flink's
/// `GlobalConfiguration.HIDDEN_CONTENT`).
pub const HIDDEN: &str = "******";

/// Text that must not appear in logs, `Debug` output or configuration endpoints: it prints as
/// [`HIDDEN`] and is wiped from memory when dropped. [`Sensitive::expose`] is the one way to
/// read it, so every use is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive(Zeroizing<String>);

impl Sensitive {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Sensitive(Zeroizing::new(text.into()))
    }

    /// The secret text itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

impl fmt::Display for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(HIDDEN)
    }
}

/// The shared secret of a cluster (`security.cluster-secret`): every RPC, blob and data
/// connection proves knowledge of it before anything else is read (see
/// [`handshake`](super::handshake)). It prints as [`HIDDEN`] and is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Zeroizing<Vec<u8>>);

impl ClusterSecret {
    /// Fewest bytes a secret may have: 16 bytes (128 bits) of a random secret resist guessing;
    /// anything shorter is most likely a placeholder.
    pub const MIN_LEN: usize = 16;

    /// The secret from its text, trimmed of surrounding whitespace (a file written by `echo`
    /// ends with a newline).
    pub fn new(text: &str) -> Result<Self, SecurityError> {
        let trimmed = text.trim();
        if trimmed.len() < Self::MIN_LEN {
            return Err(SecurityError::SecretTooShort {
                len: trimmed.len(),
                min: Self::MIN_LEN,
            });
        }
        Ok(ClusterSecret(Zeroizing::new(trimmed.as_bytes().to_vec())))
    }

    /// The secret from a file (a compose or Kubernetes secret mounted as a file).
    pub fn from_file(path: &Path) -> Result<Self, SecurityError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|err| SecurityError::File {
                    what: "cluster secret",
                    path: path.to_path_buf(),
                    reason: err.to_string(),
                })?,
            );
        Self::new(&text).map_err(|err| match err {
            SecurityError::SecretTooShort { len, min } => SecurityError::File {
                what: "cluster secret",
                path: path.to_path_buf(),
                reason: format!("holds {len} bytes; a cluster secret needs at least {min}"),
            },
            other => other,
        })
    }

    /// A fresh random secret: 32 random bytes as 64 hex digits.
    pub fn generate() -> Result<Sensitive, SecurityError> {
        let bytes: [u8; 32] = super::random_bytes()?;
        Ok(Sensitive::new(hex(&bytes)))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret({HIDDEN})")
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = ClusterSecret::new("correct horse battery staple").expect("long enough");
        assert_eq!(format!("{secret:?}"), "ClusterSecret(******)");
        let token = Sensitive::new("tok-123");
        assert_eq!(format!("{token:?} {token}"), "****** ******");
        assert_eq!(token.expose(), "tok-123");
    }

    #[test]
    fn short_secrets_are_refused_and_whitespace_is_trimmed() {
        assert!(matches!(
            ClusterSecret::new("  short \n"),
            Err(SecurityError::SecretTooShort { len: 5, .. })
        ));
        let a = ClusterSecret::new("0123456789abcdef\n").expect("16 bytes");
        let b = ClusterSecret::new("0123456789abcdef").expect("16 bytes");
        assert_eq!(a, b);
    }

    #[test]
    fn secret_files_are_read_and_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("rflink-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("secret");
        std::fs::write(&path, "0123456789abcdef0123\n").expect("write");
        let secret = ClusterSecret::from_file(&path).expect("readable");
        assert_eq!(secret.bytes(), b"0123456789abcdef0123");
        std::fs::write(&path, "x").expect("write");
        let err = ClusterSecret::from_file(&path).expect_err("too short");
        assert!(err.to_string().contains("at least 16"), "{err}");
        let missing = ClusterSecret::from_file(&dir.join("missing")).expect_err("missing");
        assert!(missing.to_string().contains("missing"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let a = ClusterSecret::generate().expect("random");
        let b = ClusterSecret::generate().expect("random");
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, b);
        assert!(ClusterSecret::new(a.expose()).is_ok());
    }
}
