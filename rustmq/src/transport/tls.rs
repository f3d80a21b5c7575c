//! rustls client configurations: which broker certificates are trusted, which client
//! certificate is presented.
//!
//! ```text
//! tls_config                        broker address   chain of trust checked against
//! -------------------------------   --------------   ---------------------------------------
//! Some { ca_cert: Some(..) }        any              exactly that CA bundle
//! Some { insecure_skip_verify }     any              nothing (warned once per client)
//!   (or quic_config.insecure, with or without a tls_config)
//! Some { .. } otherwise             any              Mozilla roots (webpki-roots)
//! None                              non-loopback     Mozilla roots (webpki-roots)
//! None                              loopback         nothing: loopback development trust
//! ```
//!
//! Whatever the row, the broker must prove possession of its certificate's key: the TLS 1.3
//! handshake signature is always verified. Loopback development trust exists so that
//! `ClientConfig::default()` works against a local development broker, whose certificate is
//! self-signed; it is decided per connection, from the configured host name *and* the resolved
//! address (both loopback), so that it cannot leak into connections to another machine.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::{QuicConfig, TlsConfig};
use crate::error::{ClientError, Result};

/// The rustls configurations of one client.
#[derive(Debug, Clone)]
pub(crate) struct TlsSetup {
    /// Used for every connection that loopback development trust does not cover.
    pub(crate) verified: Arc<rustls::ClientConfig>,
    /// Loopback development trust; only built when no `tls_config` is set.
    pub(crate) loopback: Option<Arc<rustls::ClientConfig>>,
    /// Overrides the name checked in the broker's certificate.
    pub(crate) server_name: Option<String>,
}

impl TlsSetup {
    /// Builds the configurations, reading every certificate and key file now so that a
    /// missing file fails [`RustMqClient::new`](crate::RustMqClient::new) with a clear error
    /// instead of every connection attempt.
    ///
    /// `quic`'s `server_name` and `insecure` (the seed SDK's place for them) mean what
    /// `tls`'s `server_name` and `insecure_skip_verify` do; its `alpn_protocols` are offered.
    pub(crate) fn new(tls: Option<&TlsConfig>, quic: &QuicConfig) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let alpn = &quic.alpn_protocols;
        let server_name = tls
            .and_then(|tls| tls.server_name.clone())
            .or_else(|| quic.server_name.clone());
        let insecure = quic.insecure || tls.is_some_and(|tls| tls.insecure_skip_verify);
        let unset = TlsConfig::default();
        let tls = match tls {
            Some(tls) => tls,
            // Turning verification off says which trust to use, as a `tls_config` would.
            None if insecure => &unset,
            None => {
                let roots = webpki_verifier(&provider, webpki_roots())?;
                let verified = client_config(&provider, roots, None, alpn)?;
                let loopback = client_config(&provider, no_chain_verifier(&provider), None, alpn)?;
                return Ok(TlsSetup {
                    verified,
                    loopback: Some(loopback),
                    server_name,
                });
            }
        };

        let verifier = if insecure {
            tracing::warn!(
                "tls_config.insecure_skip_verify or quic_config.insecure is set: broker \
                 certificates are not verified and anyone on the network path can impersonate \
                 the broker; never use this in production"
            );
            no_chain_verifier(&provider)
        } else if let Some(ca) = &tls.ca_cert {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca, "CA certificate")? {
                roots.add(cert).map_err(|e| {
                    ClientError::Tls(format!("invalid CA certificate in {ca}: {e}"))
                })?;
            }
            webpki_verifier(&provider, roots)?
        } else {
            webpki_verifier(&provider, webpki_roots())?
        };

        let identity = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => {
                Some((load_certs(cert, "client certificate")?, load_key(key)?))
            }
            (None, None) => None,
            _ => {
                return Err(ClientError::Tls(
                    "client_cert and client_key must be set together".into(),
                ))
            }
        };
        Ok(TlsSetup {
            verified: client_config(&provider, verifier, identity, alpn)?,
            loopback: None,
            server_name,
        })
    }
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_config(
    provider: &Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    identity: Option<Identity>,
    alpn: &[Vec<u8>],
) -> Result<Arc<rustls::ClientConfig>> {
    // QUIC mandates TLS 1.3; offering 1.2 would only fail later inside quinn.
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls(format!("cannot configure tls 1.3: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| ClientError::Tls(format!("invalid client certificate or key: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}

fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

fn webpki_verifier(
    provider: &Arc<CryptoProvider>,
    roots: RootCertStore,
) -> Result<Arc<dyn ServerCertVerifier>> {
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ClientError::Tls(format!("cannot build certificate verifier: {e}")))?;
    Ok(verifier)
}

fn no_chain_verifier(provider: &CryptoProvider) -> Arc<dyn ServerCertVerifier> {
    Arc::new(SignatureOnlyVerifier {
        algorithms: provider.signature_verification_algorithms,
    })
}

fn load_certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| ClientError::Tls(format!("cannot read {what} file {path}: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::Tls(format!(
            "{what} file {path} contains no PEM certificate"
        )));
    }
    Ok(certs)
}

fn load_key(path: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => ClientError::Tls(format!(
            "client key file {path} contains no PEM private key"
        )),
        e => ClientError::Tls(format!("cannot read client key file {path}: {e}")),
    })
}

/// Accepts the broker's certificate without a chain of trust or name check, but still
/// requires the handshake to be signed by that certificate's key: used for loopback
/// development trust and `insecure_skip_verify`.
struct SignatureOnlyVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for SignatureOnlyVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureOnlyVerifier")
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for SignatureOnlyVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_error(config: TlsConfig) -> String {
        match TlsSetup::new(Some(&config), &QuicConfig::default()) {
            Err(ClientError::Tls(msg)) => msg,
            other => panic!("expected a tls error, got {other:?}"),
        }
    }

    fn write(dir: &tempfile::TempDir, name: &str, contents: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn default_config_has_loopback_trust_and_alpn() {
        let setup = TlsSetup::new(None, &QuicConfig::default()).unwrap();
        assert!(setup.loopback.is_some());
        assert_eq!(setup.verified.alpn_protocols, vec![b"rustmq/1".to_vec()]);
    }

    #[test]
    fn a_tls_config_never_gets_loopback_trust() {
        let setup = TlsSetup::new(Some(&TlsConfig::default()), &QuicConfig::default()).unwrap();
        assert!(setup.loopback.is_none());
    }

    #[test]
    fn missing_ca_file_is_a_clear_tls_error() {
        let msg = tls_error(TlsConfig {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        });
        assert!(
            msg.contains("CA certificate") && msg.contains("/nonexistent/ca.pem"),
            "{msg}"
        );
    }

    #[test]
    fn ca_file_without_certificates_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let ca = write(&dir, "empty.pem", "not a certificate\n");
        let msg = tls_error(TlsConfig {
            ca_cert: Some(ca),
            ..Default::default()
        });
        assert!(msg.contains("contains no PEM certificate"), "{msg}");
    }

    #[test]
    fn client_cert_without_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
        let cert_path = write(&dir, "client.pem", &cert.cert.pem());
        let msg = tls_error(TlsConfig {
            client_cert: Some(cert_path.clone()),
            ..Default::default()
        });
        assert!(msg.contains("together"), "{msg}");
        let key_path = write(&dir, "no-key.pem", &cert.cert.pem());
        let msg = tls_error(TlsConfig {
            client_cert: Some(cert_path),
            client_key: Some(key_path),
            ..Default::default()
        });
        assert!(msg.contains("no PEM private key"), "{msg}");
    }

    #[test]
    fn ca_and_client_identity_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
        let setup = TlsSetup::new(
            Some(&TlsConfig {
                ca_cert: Some(write(&dir, "ca.pem", &ca.cert.pem())),
                client_cert: Some(write(&dir, "c.pem", &client.cert.pem())),
                client_key: Some(write(&dir, "k.pem", &client.key_pair.serialize_pem())),
                server_name: Some("broker.internal".into()),
                insecure_skip_verify: false,
            }),
            &QuicConfig::default(),
        )
        .unwrap();
        assert!(setup.verified.client_auth_cert_resolver.has_certs());
        assert_eq!(setup.server_name.as_deref(), Some("broker.internal"));
    }

    /// The seed SDK's `quic_config.server_name`, `insecure` and `alpn_protocols` are used:
    /// the name when `tls_config` has none, `insecure` as `insecure_skip_verify` (without a
    /// `tls_config`, it replaces loopback development trust by no verification anywhere), and
    /// the protocols offered in the given order.
    #[test]
    fn the_seeds_quic_config_tls_fields_are_used() {
        let quic = QuicConfig {
            server_name: Some("broker.internal".into()),
            alpn_protocols: vec![b"proxy/1".to_vec(), rustmq_protocol::ALPN.to_vec()],
            insecure: true,
            ..QuicConfig::default()
        };
        let setup = TlsSetup::new(None, &quic).unwrap();
        assert_eq!(setup.server_name.as_deref(), Some("broker.internal"));
        assert!(
            setup.loopback.is_none(),
            "one configuration, without verification"
        );
        assert_eq!(
            setup.verified.alpn_protocols,
            vec![b"proxy/1".to_vec(), b"rustmq/1".to_vec()]
        );
        // tls_config's name wins (ClientConfig::validate refuses two different ones).
        let tls = TlsConfig {
            server_name: Some("tls.internal".into()),
            ..TlsConfig::default()
        };
        let setup = TlsSetup::new(Some(&tls), &quic).unwrap();
        assert_eq!(setup.server_name.as_deref(), Some("tls.internal"));
        let setup = TlsSetup::new(
            None,
            &QuicConfig {
                insecure: false,
                ..quic
            },
        )
        .unwrap();
        assert!(
            setup.loopback.is_some(),
            "loopback development trust as before"
        );
    }
}
