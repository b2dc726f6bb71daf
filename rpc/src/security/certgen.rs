//! Generates a cluster's security material without openssl: a CA, a node certificate for the
//! internal connections, a REST server certificate, the cluster secret and a REST token
//! (`rflink security generate`, `scripts/docker-build`, tests).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use zeroize::Zeroizing;

use super::{ClusterSecret, SecurityError, Sensitive};

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Not valid before.
    pub not_before: SystemTime,
    /// Not valid after.
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (clocks of a cluster differ a little) for `days` days.
    pub fn days(days: u32) -> Self {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }

    /// A validity that ended `ago` ago, for tests of expired certificates.
    pub fn expired(ago: Duration) -> Self {
        let end = SystemTime::now() - ago;
        Validity {
            not_before: end - Duration::from_secs(30 * 86_400),
            not_after: end,
        }
    }
}

fn failed(what: &str, err: rcgen::Error) -> SecurityError {
    SecurityError::Generate(format!("{what}: {err}"))
}

fn params(
    common_name: &str,
    hosts: &[String],
    validity: Validity,
) -> Result<CertificateParams, SecurityError> {
    let mut params =
        CertificateParams::new(hosts.to_vec()).map_err(|e| failed("subject names", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rflink");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    Ok(params)
}

/// A certificate authority that signs node certificates.
pub struct CertificateAuthority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl CertificateAuthority {
    /// A fresh self-signed CA (ECDSA P-256).
    pub fn generate(common_name: &str, validity: Validity) -> Result<Self, SecurityError> {
        let mut params = params(common_name, &[], validity)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| failed("CA certificate", e))?;
        Ok(CertificateAuthority { cert, key })
    }

    /// The CA certificate in PEM: the trust store of every node and client.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `hosts` (DNS names or IP addresses; may be empty for internal
    /// certificates, whose names nobody checks), usable as server and as client.
    pub fn issue(
        &self,
        common_name: &str,
        hosts: &[String],
        validity: Validity,
    ) -> Result<IssuedCertificate, SecurityError> {
        let mut params = params(common_name, hosts, validity)?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| failed("key", e))?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| failed("certificate", e))?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: Sensitive::new(key.serialize_pem()),
        })
    }
}

/// A certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: Sensitive,
}

/// Everything a secured cluster needs, as written by [`ClusterMaterial::write_to`]:
///
/// | file | what | configuration key |
/// | --- | --- | --- |
/// | `ca.pem` | the cluster CA's certificate | `security.ssl.internal.truststore`, `security.ssl.rest.truststore` |
/// | `node.pem`, `node.key` | certificate and key shared by every node | `security.ssl.internal.cert`, `.key` |
/// | `rest.pem`, `rest.key` | the REST server's certificate (for the given host names) | `security.ssl.rest.cert`, `.key` |
/// | `cluster-secret` | 64 hex digits | `security.cluster-secret-file` |
/// | `rest-token` | 64 hex digits | `rest.auth.token-file` |
///
/// The CA's private key is not kept: to add host names, generate everything again.
#[derive(Debug, Clone)]
pub struct ClusterMaterial {
    /// `ca.pem`.
    pub ca_pem: String,
    /// `node.pem` / `node.key`.
    pub node: IssuedCertificate,
    /// `rest.pem` / `rest.key`.
    pub rest: IssuedCertificate,
    /// `cluster-secret`.
    pub cluster_secret: Sensitive,
    /// `rest-token`.
    pub rest_token: Sensitive,
}

/// The files [`ClusterMaterial::write_to`] writes, by name.
pub const FILES: &[&str] = &[
    "ca.pem",
    "node.pem",
    "node.key",
    "rest.pem",
    "rest.key",
    "cluster-secret",
    "rest-token",
];

impl ClusterMaterial {
    /// A new CA and everything signed by it. `rest_hosts` are the names clients reach the REST
    /// endpoint by (`localhost` and `127.0.0.1` are always added).
    pub fn generate(rest_hosts: &[String], validity: Validity) -> Result<Self, SecurityError> {
        let ca = CertificateAuthority::generate("rflink cluster CA", validity)?;
        let node = ca.issue("rflink node", &["rflink-node".to_string()], validity)?;
        let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
        for host in rest_hosts {
            if !hosts.contains(host) {
                hosts.push(host.clone());
            }
        }
        let rest = ca.issue("rflink REST", &hosts, validity)?;
        Ok(ClusterMaterial {
            ca_pem: ca.cert_pem(),
            node,
            rest,
            cluster_secret: ClusterSecret::generate()?,
            rest_token: ClusterSecret::generate()?,
        })
    }

    /// Writes the files of the table above into `dir` (created, mode 0700 on Unix). Keys and
    /// secrets are written with mode 0600 unless `readable` (0644: for compose, whose file
    /// secrets are bind-mounted as they are into containers running as another user; the
    /// directory's 0700 keeps them from other users of the host). Existing files are replaced.
    pub fn write_to(&self, dir: &Path, readable: bool) -> Result<Vec<PathBuf>, SecurityError> {
        let io = |path: &Path, err: std::io::Error| SecurityError::File {
            what: "generated file",
            path: path.to_path_buf(),
            reason: err.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        set_mode(dir, 0o700).map_err(|e| io(dir, e))?;
        let secret_mode = if readable { 0o644 } else { 0o600 };
        let files: [(&str, &str, u32); 7] = [
            ("ca.pem", &self.ca_pem, 0o644),
            ("node.pem", &self.node.cert_pem, 0o644),
            ("node.key", self.node.key_pem.expose(), secret_mode),
            ("rest.pem", &self.rest.cert_pem, 0o644),
            ("rest.key", self.rest.key_pem.expose(), secret_mode),
            ("cluster-secret", self.cluster_secret.expose(), secret_mode),
            ("rest-token", self.rest_token.expose(), secret_mode),
        ];
        let mut written = Vec::new();
        for (name, content, mode) in files {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            let text = Zeroizing::new(format!("{}\n", content.trim_end()));
            std::fs::write(&tmp, text.as_bytes()).map_err(|e| io(&tmp, e))?;
            set_mode(&tmp, mode).map_err(|e| io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}
