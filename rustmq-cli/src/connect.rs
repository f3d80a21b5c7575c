//! The client configuration the global options describe.

use rustmq::{ClientConfig, RustMqClient, TlsConfig};

use crate::args::GlobalArgs;
use crate::error::CliError;

/// The brokers to reach: the given ones, or `localhost:9092`.
pub(crate) fn brokers(global: &GlobalArgs) -> Vec<String> {
    if global.brokers.is_empty() {
        vec!["localhost:9092".to_owned()]
    } else {
        global.brokers.clone()
    }
}

/// A client configuration from the global options.
pub(crate) fn client_config(global: &GlobalArgs) -> ClientConfig {
    let tls =
        (global.ca_cert.is_some() || global.server_name.is_some() || global.insecure).then(|| {
            TlsConfig {
                ca_cert: global.ca_cert.as_ref().map(|p| p.display().to_string()),
                server_name: global.server_name.clone(),
                insecure_skip_verify: global.insecure,
                ..TlsConfig::default()
            }
        });
    let mut config = ClientConfig {
        brokers: brokers(global),
        client_id: Some(
            global
                .client_id
                .clone()
                .unwrap_or_else(|| format!("rustmq-cli-{:06x}", fastrand::u32(..0xff_ffff))),
        ),
        request_timeout: global.timeout,
        connect_timeout: global.timeout,
        tls_config: tls,
        ..ClientConfig::default()
    };
    // A command line gives up quickly when nothing answers.
    config.retry_config.max_retries = config.retry_config.max_retries.min(2);
    config
}

/// A connected client.
pub(crate) async fn connect(global: &GlobalArgs) -> Result<RustMqClient, CliError> {
    let config = client_config(global);
    let brokers = config.brokers.join(",");
    RustMqClient::new(config)
        .await
        .map_err(|e| CliError::connect(brokers, e))
}
