//! Shared by `secure_producer` and `secure_consumer`: a CA and certificates made with rcgen
//! in a temporary directory, a users file of argon2 hashes, and an embedded broker that
//! requires mutual TLS, a password and ACL permissions.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustmq::testing::{BrokerConfig, TestBroker};
use rustmq::{AuthConfig, AuthMethod, ClientConfig, TlsConfig};
use rustmq_broker::security::{
    hash_password, AclRule, Operation, PatternType, Permission, ResourceType,
};
use rustmq_broker::tls::ClientAuth;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running secured broker and the directory holding its certificates.
pub(crate) struct SecureBroker {
    pub(crate) broker: TestBroker,
    pub(crate) dir: tempfile::TempDir,
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Result<Self, BoxError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "RustMQ example CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        Ok(Self {
            cert: params.self_signed(&key)?,
            key,
        })
    }

    /// Writes `<name>.pem` and `<name>-key.pem`, signed by this CA.
    fn issue(
        &self,
        dir: &Path,
        name: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<(), BoxError> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem())?;
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem())?;
        Ok(())
    }
}

fn rule(principal: &str, resource: ResourceType, name: &str, operations: &[Operation]) -> AclRule {
    AclRule {
        principal: principal.into(),
        resource,
        name: name.into(),
        pattern: PatternType::Prefix,
        operations: operations.to_vec(),
        permission: Permission::Allow,
    }
}

/// Starts a broker with mTLS (`client_auth = required`), required password authentication
/// and ACLs: `producer` may create and write `orders*`, `consumer` may read `orders*` in the
/// groups `billing*`.
pub(crate) async fn start() -> Result<SecureBroker, BoxError> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new()?;
    std::fs::write(dir.path().join("ca.pem"), ca.cert.pem())?;
    ca.issue(
        dir.path(),
        "broker",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    for client in ["producer", "consumer"] {
        ca.issue(dir.path(), client, &[], ExtendedKeyUsagePurpose::ClientAuth)?;
    }
    // The users file holds only hashes (`rustmq-broker hash-password` prints one).
    let users = format!(
        "[users]\nproducer = \"{}\"\nconsumer = \"{}\"\n",
        hash_password("producer-secret")?,
        hash_password("consumer-secret")?
    );
    std::fs::write(dir.path().join("users.toml"), users)?;

    let mut config = BrokerConfig::default();
    config.tls.cert = Some(dir.path().join("broker.pem"));
    config.tls.key = Some(dir.path().join("broker-key.pem"));
    config.tls.client_auth = ClientAuth::Required;
    config.tls.client_ca = Some(dir.path().join("ca.pem"));
    config.auth.required = true;
    config.auth.users_file = Some(dir.path().join("users.toml"));
    config.acl = vec![
        rule(
            "producer",
            ResourceType::Topic,
            "orders",
            &[Operation::Create, Operation::Write],
        ),
        rule(
            "consumer",
            ResourceType::Topic,
            "orders",
            &[Operation::Read],
        ),
        rule(
            "consumer",
            ResourceType::Group,
            "billing",
            &[Operation::Read, Operation::Commit],
        ),
    ];
    let broker = TestBroker::start_with(config).await?;
    Ok(SecureBroker { broker, dir })
}

impl SecureBroker {
    /// A client config for `user`: trusts the example CA only, presents the user's
    /// certificate, and logs in with the user's password.
    pub(crate) fn client_config(&self, user: &str, password: &str) -> ClientConfig {
        let file = |name: &str| Some(self.dir.path().join(name).display().to_string());
        ClientConfig {
            brokers: vec![self.broker.addr().to_string()],
            client_id: Some(user.to_owned()),
            tls_config: Some(TlsConfig {
                ca_cert: file("ca.pem"),
                client_cert: file(&format!("{user}.pem")),
                client_key: file(&format!("{user}-key.pem")),
                server_name: Some("localhost".into()),
                insecure_skip_verify: false,
            }),
            auth: Some(AuthConfig {
                method: AuthMethod::SaslPlain,
                username: Some(user.to_owned()),
                password: Some(password.to_owned()),
                ..Default::default()
            }),
            ..ClientConfig::default()
        }
    }
}
