//! Shared by the `security_*` tests: a small PKI made with rcgen in a temp dir, broker and
//! client configurations using it, users files, and raw hellos with credentials.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustmq::config::{AuthConfig, AuthMethod, ClientConfig, TlsConfig};
use rustmq::testing::{BrokerConfig, TestBroker};
use rustmq_protocol::*;

/// A CA that can sign broker and client certificates, writing every PEM into `dir`.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    pub ca_path: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        Self {
            dir,
            ca,
            ca_key,
            ca_path,
        }
    }

    /// Signs a leaf certificate; returns (cert path, key path).
    pub fn issue(
        &self,
        file: &str,
        cn: &str,
        sans: &[&str],
        server: bool,
        expired: bool,
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let cert_path = self.dir.path().join(format!("{file}.pem"));
        let key_path = self.dir.path().join(format!("{file}-key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (path(&cert_path), path(&key_path))
    }

    /// A broker certificate for localhost / 127.0.0.1.
    pub fn broker_cert(&self) -> (String, String) {
        self.issue(
            "broker",
            "rustmq broker",
            &["localhost", "127.0.0.1"],
            true,
            false,
        )
    }

    pub fn ca(&self) -> String {
        path(&self.ca_path)
    }
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A broker config serving `pki`'s broker certificate.
pub fn broker_config(pki: &Pki) -> BrokerConfig {
    let (cert, key) = pki.broker_cert();
    let mut config = BrokerConfig::default();
    config.tls.cert = Some(cert.into());
    config.tls.key = Some(key.into());
    config
}

/// A client config trusting `ca` and checking the name `localhost`.
pub fn client_config(broker: &TestBroker, ca: &str) -> ClientConfig {
    let mut config = broker.client_config();
    config.tls_config = Some(TlsConfig {
        ca_cert: Some(ca.to_owned()),
        server_name: Some("localhost".into()),
        ..TlsConfig::default()
    });
    config.connect_timeout = std::time::Duration::from_secs(5);
    config
}

pub fn with_password(mut config: ClientConfig, user: &str, password: &str) -> ClientConfig {
    config.auth = Some(AuthConfig {
        method: AuthMethod::SaslPlain,
        username: Some(user.into()),
        password: Some(password.into()),
        ..Default::default()
    });
    config
}

pub fn with_token(mut config: ClientConfig, token: &str) -> ClientConfig {
    config.auth = Some(AuthConfig {
        method: AuthMethod::Token,
        token: Some(token.into()),
        ..Default::default()
    });
    config
}

/// Writes a users file with argon2 hashes of the given passwords.
pub fn users_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from("[users]\n");
    for (user, password) in users {
        let hash = rustmq_broker::security::hash_password(password).unwrap();
        text.push_str(&format!("{user} = \"{hash}\"\n"));
    }
    let file = dir.join("users.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// The principal of a connected client's connection (a repeated hello answers it).
pub async fn principal(client: &rustmq::RustMqClient) -> String {
    let hello = Request::Hello(HelloRequest {
        min_version: 1,
        max_version: PROTOCOL_VERSION,
        client_id: "probe".into(),
        credentials: None,
    });
    match client.raw_request(hello).await.unwrap() {
        Response::Hello(h) => h.principal,
        other => panic!("unexpected answer to hello: {other:?}"),
    }
}

/// One hello with `credentials` on a raw connection: the broker's answer.
pub async fn raw_hello_with(
    conn: &quinn::Connection,
    credentials: Option<Credentials>,
) -> Option<Response> {
    let hello = Request::Hello(HelloRequest {
        min_version: 1,
        max_version: 1,
        client_id: "raw".into(),
        credentials,
    });
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(&hello.to_frame(1)).await.ok()?;
    let _ = send.finish();
    let answer = recv.read_to_end(1 << 20).await.ok()?;
    Response::from_frame(&tests::decode_one(&answer)?).ok()
}
