//! Who a connection is, and what it may do.
//!
//! ```text
//! QUIC handshake ── client certificate (client_auth = optional | required, checked
//!                   against tls.client_ca) ──► principal from its CN or SAN
//! Hello ─────────── credentials? ──► Authenticator (users file: argon2; tokens: SHA-256)
//!                   none ──► the certificate's principal, else "anonymous" (refused when
//!                   auth.required); failures counted per connection, closed past max_failures
//! every request ─── Acl::authorize (deny wins; no rules = open) ──► handler
//! ```

mod acl;
mod auth;
mod principal;

pub use acl::{Acl, AclRule, Denied, Operation, PatternType, Permission, ResourceType};
pub use auth::{hash_password, hash_token, AuthFailure, AuthSettings, Authenticator, TokenEntry};
pub use principal::principal_from_certificate;

use crate::config::BrokerConfig;

/// A security setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    /// A file could not be read, or a value is wrong.
    #[error("invalid security configuration: {0}")]
    Invalid(String),
}

/// Authentication and authorization, built once at start from the config.
#[derive(Debug, Default)]
pub struct Security {
    /// Checks hello credentials.
    pub authenticator: Authenticator,
    /// Checks every request.
    pub acl: Acl,
}

impl Security {
    /// Loads the users file and checks token digests.
    pub fn from_config(config: &BrokerConfig) -> Result<Self, SecurityError> {
        Ok(Self {
            authenticator: Authenticator::from_settings(&config.auth)?,
            acl: Acl::new(config.acl.clone()),
        })
    }
}

impl Security {
    /// Keeps in a list answer (`ListTopics`, `ListGroups`, `Metadata`) only what `principal`
    /// may describe, and in a group's description only the committed offsets and assignments
    /// of topics it may describe (a client library's entry about a topic, which `is_topic`
    /// says is no topic itself, goes with that topic; its other entries with the group); other
    /// answers pass unchanged.
    pub fn filter_describable(
        &self,
        principal: &str,
        answer: rustmq_protocol::Response,
        is_topic: impl Fn(&str) -> bool,
    ) -> rustmq_protocol::Response {
        use rustmq_protocol::Response;
        if self.acl.is_open() {
            return answer;
        }
        let may = |res, name: &str| self.acl.allows(principal, Operation::Describe, res, name);
        match answer {
            Response::ListTopics(mut r) => {
                r.topics.retain(|t| may(ResourceType::Topic, &t.name));
                Response::ListTopics(r)
            }
            Response::Metadata(mut r) => {
                r.topics.retain(|t| may(ResourceType::Topic, &t.name));
                Response::Metadata(r)
            }
            Response::ListGroups(mut r) => {
                r.groups.retain(|g| may(ResourceType::Group, g));
                Response::ListGroups(r)
            }
            Response::DescribeGroup(mut r) => {
                // A library entry about a topic (`__seen.<topic>`, ..) carries that topic's
                // positions: shown as the topic's offsets are; the others are the group's.
                let shown = |entry: &str| {
                    if is_topic(entry) || !rustmq_protocol::is_library_entry(entry) {
                        return may(ResourceType::Topic, entry);
                    }
                    rustmq_protocol::entry_topic(entry)
                        .is_none_or(|topic| may(ResourceType::Topic, topic))
                };
                r.offsets.retain(|o| shown(&o.topic));
                for member in &mut r.members {
                    member
                        .assignment
                        .retain(|a| may(ResourceType::Topic, &a.topic));
                }
                Response::DescribeGroup(r)
            }
            other => other,
        }
    }
}
