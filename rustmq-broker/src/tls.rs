//! The broker's certificate: a configured chain and key, or a self-signed development
//! certificate generated once and kept in the data directory; and, with `client_auth`, the
//! verifier of client certificates against the `client_ca` bundle.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::config::TlsSettings;

/// Errors loading or generating the broker's certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot load {what} from {path}: {message}")]
    Load {
        /// Certificate or key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Generating the development certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    /// rustls rejected the certificate or key.
    #[error("invalid certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
    /// Writing the generated certificate failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether clients must present a certificate (`[tls] client_auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client certificate is asked for; when presented it must chain to `client_ca`.
    Optional,
    /// Every client must present a certificate chaining to `client_ca`.
    Required,
}

/// Which name of a client certificate is the connection's principal (`[tls] principal_from`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalFrom {
    /// The subject's common name.
    #[default]
    Cn,
    /// The first subject alternative name (DNS, else e-mail, else URI).
    San,
}

/// A certificate chain and key ready for rustls, plus the PEM a client should trust.
#[derive(Debug)]
pub struct BrokerIdentity {
    /// The certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// PEM of the certificate a client should trust (the leaf when self-signed).
    pub trust_pem: String,
    /// Where that PEM lives on disk.
    pub trust_path: PathBuf,
}

/// Common name of generated development certificates.
pub const DEV_CERT_COMMON_NAME: &str = "rustmq development broker";

impl BrokerIdentity {
    /// Loads the configured certificate, or the development certificate in `data_dir/tls`,
    /// generating it on first start.
    pub fn load_or_generate(settings: &TlsSettings, data_dir: &Path) -> Result<Self, TlsError> {
        match (&settings.cert, &settings.key) {
            (Some(cert), Some(key)) => Self::load(cert, key),
            _ => Self::dev(&data_dir.join("tls")),
        }
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let load_err = |what, path: &Path, message: String| TlsError::Load {
            what,
            path: path.to_owned(),
            message,
        };
        let chain = load_chain(cert_path, "certificate")?;
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| load_err("private key", key_path, e.to_string()))?;
        let trust_pem = std::fs::read_to_string(cert_path)
            .map_err(|e| load_err("certificate", cert_path, e.to_string()))?;
        Ok(Self {
            chain,
            key,
            trust_pem,
            trust_path: cert_path.to_owned(),
        })
    }

    fn dev(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        // An empty or cut file is what a crash during the first start could leave before these
        // files were written through temporary ones: the pair is made again, as when one is
        // missing (it is this broker's own, which only its clients trust).
        let written = |path: &Path| std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        if written(&cert_path) && written(&key_path) {
            match Self::load(&cert_path, &key_path) {
                Err(e @ TlsError::Load { .. }) => {
                    tracing::warn!(error = %e, "the development certificate or key cannot be read; making a new pair");
                }
                loaded => return loaded,
            }
        }
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(write_err(dir))?;
        let mut params = rcgen::CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])
        .map_err(|e| TlsError::Generate(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, DEV_CERT_COMMON_NAME);
        let key_pair = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        // Each through a synced temporary file, the certificate last, then the directory
        // synced: a crash leaves the pair whole, or a certificate missing (both made again).
        write_durably(&key_path, key_pair.serialize_pem().as_bytes(), 0o600)
            .map_err(write_err(&key_path))?;
        write_durably(&cert_path, cert.pem().as_bytes(), 0o644).map_err(write_err(&cert_path))?;
        crate::storage::sync_dir(dir).map_err(write_err(dir))?;
        tracing::info!(path = %cert_path.display(), "generated a self-signed development certificate");
        Self::load(&cert_path, &key_path)
    }

    /// A rustls server config speaking the RustMQ ALPN, verifying client certificates as
    /// `settings.client_auth` says.
    pub fn server_config(
        &self,
        settings: &TlsSettings,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let builder = match (settings.client_auth, &settings.client_ca) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => {
                return Err(TlsError::Load {
                    what: "client CA bundle",
                    path: PathBuf::new(),
                    message: "tls.client_auth needs tls.client_ca".into(),
                })
            }
            (mode, Some(ca)) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in load_chain(ca, "client CA bundle")? {
                    roots.add(cert)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if mode == ClientAuth::Optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::Generate(format!("client verifier: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![rustmq_protocol::ALPN.to_vec()];
        config.max_early_data_size = 0;
        Ok(Arc::new(config))
    }
}

fn load_chain(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let load_err = |message: String| TlsError::Load {
        what,
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| load_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(load_err("no certificate in file".into()));
    }
    Ok(chain)
}

/// Replaces `path` with `data` (file mode `mode`) through a synced temporary file beside it.
fn write_durably(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.to_owned();
    tmp.as_mut_os_string().push(".tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a crash during the first start could leave before the files were written through
    /// temporary ones, an empty or cut certificate beside its key, is made again rather than
    /// refused at every start; the key is not readable by others.
    #[test]
    fn an_empty_or_cut_dev_certificate_is_made_again() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = BrokerIdentity::load_or_generate(&TlsSettings::default(), dir.path()).unwrap();
        let tls = dir.path().join("tls");
        let key_mode = std::fs::metadata(tls.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o077, 0, "key mode {key_mode:o}");
        std::fs::write(tls.join("cert.pem"), "").unwrap();
        let again = BrokerIdentity::load_or_generate(&TlsSettings::default(), dir.path()).unwrap();
        assert_ne!(first.chain, again.chain);
        // Cut short rather than empty.
        let pem = std::fs::read_to_string(tls.join("cert.pem")).unwrap();
        std::fs::write(tls.join("cert.pem"), &pem[..pem.len() / 2]).unwrap();
        let third = BrokerIdentity::load_or_generate(&TlsSettings::default(), dir.path()).unwrap();
        assert_ne!(again.chain, third.chain);
        third.server_config(&TlsSettings::default()).unwrap();
        assert!(!tls.join("cert.pem.tmp").exists() && !tls.join("key.pem.tmp").exists());
    }

    #[test]
    fn dev_certificate_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = BrokerIdentity::load_or_generate(&TlsSettings::default(), dir.path()).unwrap();
        let b = BrokerIdentity::load_or_generate(&TlsSettings::default(), dir.path()).unwrap();
        assert_eq!(a.chain, b.chain);
        a.server_config(&TlsSettings::default()).unwrap();
    }

    #[test]
    fn missing_configured_file_is_a_clear_error() {
        let settings = TlsSettings {
            cert: Some("/nonexistent/cert.pem".into()),
            key: Some("/nonexistent/key.pem".into()),
            ..Default::default()
        };
        let err = BrokerIdentity::load_or_generate(&settings, Path::new("/tmp")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
