//! Authorization: `[[acl]]` rules from the broker config, and which operation on which
//! resource each request needs.
//!
//! ```toml
//! [[acl]]
//! principal = "alice"          # or "*" for every principal
//! resource = "topic"           # or "group", or "producer" (a named producer)
//! name = "orders."
//! pattern = "prefix"           # or "literal" (the default)
//! operations = ["read", "write", "describe"]
//! permission = "allow"         # or "deny"; a matching deny always wins
//! ```
//!
//! With no rule at all the broker is open. Once one rule exists, a request is allowed only
//! when an allow rule matches and no deny rule does. `describe` is also granted by an allow
//! of `read`, `write` or `delete` on the same resource (a producer that may write a topic
//! may look up its partitions).

use serde::{Deserialize, Serialize};

use rustmq_protocol::Request;

/// What a rule protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// A named producer (a stream processor's, `rustmq.stream.<group>`): starting one fences
    /// every earlier instance of the name, on every partition.
    Producer,
}

impl std::fmt::Display for ResourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Producer => "producer",
        })
    }
}

/// How a rule's `name` matches resource names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternType {
    /// The exact name (`*` matches every name).
    #[default]
    Literal,
    /// Every name starting with `name`.
    Prefix,
}

/// An operation a rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Fetch and list offsets (topic); join, heartbeat, leave, fetch offsets (group).
    Read,
    /// Produce (topic).
    Write,
    /// Create a topic, explicitly or by producing to a missing one.
    Create,
    /// Delete a topic.
    Delete,
    /// Describe, list and metadata.
    Describe,
    /// Commit offsets (group).
    Commit,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Describe => "describe",
            Operation::Commit => "commit",
        })
    }
}

/// Whether a rule allows or denies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Grants the operations.
    #[default]
    Allow,
    /// Refuses the operations, whatever else allows them.
    Deny,
}

/// One `[[acl]]` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Principal the rule applies to, or `*` for all.
    pub principal: String,
    /// Topic, group or named producer.
    pub resource: ResourceType,
    /// Resource name (or prefix); `*` with a literal pattern matches every name.
    pub name: String,
    /// Literal or prefix.
    #[serde(default)]
    pub pattern: PatternType,
    /// The operations covered.
    pub operations: Vec<Operation>,
    /// Allow (default) or deny.
    #[serde(default)]
    pub permission: Permission,
}

impl AclRule {
    fn matches(&self, principal: &str, resource: ResourceType, name: &str) -> bool {
        (self.principal == "*" || self.principal == principal)
            && self.resource == resource
            && match self.pattern {
                PatternType::Literal => self.name == "*" || self.name == name,
                PatternType::Prefix => name.starts_with(&self.name),
            }
    }
}

/// A refused operation, with what the client needs to know to ask for the right rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("principal {principal:?} is not authorized to {operation} {resource} {name:?}")]
pub struct Denied {
    /// Who asked.
    pub principal: String,
    /// What they wanted to do.
    pub operation: Operation,
    /// On what kind of resource.
    pub resource: ResourceType,
    /// Which one.
    pub name: String,
}

/// The broker's ACL rules.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<AclRule>,
}

impl Acl {
    /// The rules from the config.
    pub fn new(rules: Vec<AclRule>) -> Self {
        Self { rules }
    }

    /// No rules: everything is allowed.
    pub fn is_open(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `principal` may do `operation` on the resource.
    pub fn allows(
        &self,
        principal: &str,
        operation: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        if self.is_open() {
            return true;
        }
        let covers = |rule: &AclRule, op: Operation| {
            rule.matches(principal, resource, name) && rule.operations.contains(&op)
        };
        if self
            .rules
            .iter()
            .any(|r| r.permission == Permission::Deny && covers(r, operation))
        {
            return false;
        }
        let implied: &[Operation] = match operation {
            Operation::Describe => &[
                Operation::Describe,
                Operation::Read,
                Operation::Write,
                Operation::Delete,
            ],
            _ => std::slice::from_ref(&operation),
        };
        self.rules
            .iter()
            .any(|r| r.permission == Permission::Allow && implied.iter().any(|op| covers(r, *op)))
    }

    /// `Ok` when allowed, else the refusal naming operation and resource.
    pub fn check(
        &self,
        principal: &str,
        operation: Operation,
        resource: ResourceType,
        name: &str,
    ) -> Result<(), Denied> {
        if self.allows(principal, operation, resource, name) {
            Ok(())
        } else {
            Err(Denied {
                principal: principal.to_owned(),
                operation,
                resource,
                name: name.to_owned(),
            })
        }
    }

    /// Whether `principal` may write some topic (what an unnamed `InitProducer`, which names
    /// no topic, needs): an allow rule grants `write` on names that the deny rules do not all
    /// take back.
    fn may_write_somewhere(&self, principal: &str) -> bool {
        if self.is_open() {
            return true;
        }
        let writes = |r: &AclRule, permission: Permission| {
            r.permission == permission
                && r.resource == ResourceType::Topic
                && (r.principal == "*" || r.principal == principal)
                && r.operations.contains(&Operation::Write)
        };
        // Whether deny rules take back every name starting with `prefix`.
        let denied_from = |prefix: &str| {
            self.rules
                .iter()
                .filter(|d| writes(d, Permission::Deny))
                .any(|d| match d.pattern {
                    PatternType::Literal => d.name == "*",
                    PatternType::Prefix => prefix.starts_with(&d.name),
                })
        };
        self.rules
            .iter()
            .filter(|r| writes(r, Permission::Allow))
            .any(|r| match r.pattern {
                PatternType::Literal if r.name == "*" => !denied_from(""),
                PatternType::Literal => {
                    self.allows(principal, Operation::Write, ResourceType::Topic, &r.name)
                }
                PatternType::Prefix => !denied_from(&r.name),
            })
    }

    /// Checks everything `req` needs, before it is handled. Lists (`ListTopics`,
    /// `ListGroups`, `Metadata` of all topics) are not refused here: their answers are
    /// filtered to what the principal may describe. A produce (or `AutoCreateTopic`) to a
    /// missing topic that would auto-create it needs `create` too; the handler checks that.
    ///
    /// `is_topic` tells whether a name is an existing topic's: the client libraries' own
    /// offsets entries (`__closed`, `__out.<topic>`, `__seen.<topic>`:
    /// [`rustmq_protocol::is_library_entry`]) are covered by the group's permission, unless a
    /// topic has that name; any other entry needs `read` on the topic it names, whether or not
    /// that topic exists yet (the entry would be its offsets once it is created).
    pub fn authorize(
        &self,
        principal: &str,
        req: &Request,
        is_topic: impl Fn(&str) -> bool,
    ) -> Result<(), Denied> {
        use Operation::*;
        use ResourceType::{Group, Producer, Topic};
        if self.is_open() {
            return Ok(());
        }
        let check = |op, res, name: &str| self.check(principal, op, res, name);
        let user_topic = |t: &&str| !rustmq_protocol::is_library_entry(t) || is_topic(t);
        match req {
            Request::Metadata(r) => {
                for t in r.topics.iter().flatten() {
                    check(Describe, Topic, t)?;
                }
                Ok(())
            }
            Request::CreateTopic(r) => check(Create, Topic, &r.name),
            Request::DeleteTopic(r) => check(Delete, Topic, &r.name),
            Request::DescribeTopic(r) => check(Describe, Topic, &r.name),
            Request::Produce(r) => check(Write, Topic, &r.topic),
            Request::AutoCreateTopic(r) => check(Write, Topic, &r.name),
            Request::Fetch(r) => check(Read, Topic, &r.topic),
            Request::ListOffsets(r) => check(Read, Topic, &r.topic),
            // Starting a named producer fences its earlier instances everywhere: the name is
            // a resource of its own, or anyone who may write one topic could stop another
            // principal's exactly-once stream.
            Request::InitProducer(r) if r.name.is_some() => {
                check(Write, Producer, r.name.as_deref().unwrap_or_default())
            }
            Request::InitProducer(_) => {
                if self.may_write_somewhere(principal) {
                    Ok(())
                } else {
                    Err(Denied {
                        principal: principal.to_owned(),
                        operation: Write,
                        resource: Topic,
                        name: "*".to_owned(),
                    })
                }
            }
            Request::JoinGroup(r) => {
                check(Read, Group, &r.group)?;
                r.topics.iter().try_for_each(|t| check(Read, Topic, t))
            }
            Request::Heartbeat(r) => check(Read, Group, &r.group),
            Request::LeaveGroup(r) => check(Read, Group, &r.group),
            Request::CommitOffsets(r) => {
                check(Commit, Group, &r.group)?;
                r.offsets
                    .iter()
                    .map(|o| o.topic.as_str())
                    .filter(user_topic)
                    .try_for_each(|t| check(Read, Topic, t))
            }
            // A library entry about a topic (`__seen.<topic>`, ..) carries that topic's
            // positions: it needs `describe` on the topic, as `DescribeGroup` shows it.
            Request::FetchOffsets(r) => {
                check(Read, Group, &r.group)?;
                r.partitions
                    .iter()
                    .map(|p| p.topic.as_str())
                    .try_for_each(|t| {
                        if user_topic(&t) {
                            check(Read, Topic, t)
                        } else {
                            rustmq_protocol::entry_topic(t)
                                .map_or(Ok(()), |topic| check(Describe, Topic, topic))
                        }
                    })
            }
            Request::DescribeGroup(r) => check(Describe, Group, &r.group),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        principal: &str,
        name: &str,
        pattern: PatternType,
        ops: &[Operation],
        permission: Permission,
    ) -> AclRule {
        AclRule {
            principal: principal.into(),
            resource: ResourceType::Topic,
            name: name.into(),
            pattern,
            operations: ops.to_vec(),
            permission,
        }
    }

    #[test]
    fn no_rules_is_open_and_one_rule_closes_everything_else() {
        assert!(Acl::default().allows("x", Operation::Delete, ResourceType::Topic, "t"));
        let acl = Acl::new(vec![rule(
            "alice",
            "orders",
            PatternType::Literal,
            &[Operation::Write],
            Permission::Allow,
        )]);
        assert!(acl.allows("alice", Operation::Write, ResourceType::Topic, "orders"));
        assert!(acl.allows("alice", Operation::Describe, ResourceType::Topic, "orders"));
        assert!(!acl.allows("alice", Operation::Read, ResourceType::Topic, "orders"));
        assert!(!acl.allows("alice", Operation::Write, ResourceType::Topic, "orders2"));
        assert!(!acl.allows("bob", Operation::Write, ResourceType::Topic, "orders"));
        assert!(!acl.allows("alice", Operation::Write, ResourceType::Group, "orders"));
    }

    #[test]
    fn prefix_wildcard_and_deny_wins() {
        let acl = Acl::new(vec![
            rule(
                "*",
                "orders.",
                PatternType::Prefix,
                &[Operation::Read],
                Permission::Allow,
            ),
            rule(
                "mallory",
                "orders.secret",
                PatternType::Literal,
                &[Operation::Read],
                Permission::Deny,
            ),
        ]);
        assert!(acl.allows("bob", Operation::Read, ResourceType::Topic, "orders.eu"));
        assert!(!acl.allows("bob", Operation::Read, ResourceType::Topic, "order"));
        assert!(acl.allows("mallory", Operation::Read, ResourceType::Topic, "orders.eu"));
        let denied = acl
            .check(
                "mallory",
                Operation::Read,
                ResourceType::Topic,
                "orders.secret",
            )
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "principal \"mallory\" is not authorized to read topic \"orders.secret\""
        );
    }

    /// Starting a named producer fences its earlier instances on every partition: it needs
    /// `write` on that producer name, not just on some topic (else a principal that may write
    /// one topic could stop another's exactly-once stream). An unnamed one needs `write` on
    /// some topic, as before.
    #[test]
    fn a_named_producer_needs_write_on_its_name() {
        let mut rules = vec![
            rule(
                "bob",
                "b",
                PatternType::Literal,
                &[Operation::Write],
                Permission::Allow,
            ),
            rule(
                "alice",
                "rustmq.stream.",
                PatternType::Prefix,
                &[Operation::Write],
                Permission::Allow,
            ),
        ];
        rules[1].resource = ResourceType::Producer;
        let acl = Acl::new(rules);
        let init = |name: Option<&str>| {
            Request::InitProducer(rustmq_protocol::InitProducerRequest {
                name: name.map(str::to_owned),
            })
        };
        let named = init(Some("rustmq.stream.payments"));
        let denied = acl.authorize("bob", &named, |_| false).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "principal \"bob\" is not authorized to write producer \"rustmq.stream.payments\""
        );
        assert!(acl.authorize("alice", &named, |_| false).is_ok());
        assert!(acl.authorize("bob", &init(None), |_| false).is_ok());
        // A producer rule is no topic's: alice may not start unnamed producers with it.
        assert!(acl.authorize("alice", &init(None), |_| false).is_err());
    }

    /// An unnamed producer needs `write` on some topic that the deny rules leave writable.
    #[test]
    fn an_unnamed_producer_needs_a_topic_the_denials_leave() {
        use PatternType::{Literal, Prefix};
        use Permission::{Allow, Deny};
        let w = &[Operation::Write];
        let init = Request::InitProducer(rustmq_protocol::InitProducerRequest { name: None });
        let may = |rules: Vec<AclRule>| Acl::new(rules).authorize("alice", &init, |_| false);
        let everything = || rule("*", "*", Literal, w, Allow);
        assert!(may(vec![everything()]).is_ok());
        assert!(may(vec![everything(), rule("alice", "*", Literal, w, Deny)]).is_err());
        assert!(may(vec![everything(), rule("alice", "", Prefix, w, Deny)]).is_err());
        assert!(may(vec![everything(), rule("bob", "*", Literal, w, Deny)]).is_ok());
        assert!(may(vec![everything(), rule("alice", "t", Literal, w, Deny)]).is_ok());
        let orders = || rule("alice", "orders.", Prefix, w, Allow);
        assert!(may(vec![orders(), rule("alice", "orders", Prefix, w, Deny)]).is_err());
        assert!(may(vec![orders(), rule("alice", "orders.eu", Prefix, w, Deny)]).is_ok());
        let one = || rule("alice", "t", Literal, w, Allow);
        assert!(may(vec![one()]).is_ok());
        assert!(may(vec![one(), rule("*", "t", Literal, w, Deny)]).is_err());
        let read_denied = rule("alice", "*", Literal, &[Operation::Read], Deny);
        assert!(may(vec![one(), read_denied]).is_ok());
    }

    /// The client libraries' `__...` offsets entries are covered by the group's permissions,
    /// but a real topic named `__...` needs `read` like any other.
    #[test]
    fn offsets_of_a_topic_named_like_a_reserved_entry_need_read() {
        let mut rules = vec![rule(
            "*",
            "g",
            PatternType::Literal,
            &[Operation::Read, Operation::Commit],
            Permission::Allow,
        )];
        rules[0].resource = ResourceType::Group;
        let acl = Acl::new(rules);
        let commit = |topic: &str| {
            Request::CommitOffsets(rustmq_protocol::CommitOffsetsRequest {
                group: "g".into(),
                member_id: String::new(),
                generation: 0,
                offsets: vec![rustmq_protocol::PartitionOffset {
                    topic: topic.into(),
                    partition: 0,
                    offset: 1,
                }],
            })
        };
        let fetch = |topic: &str| {
            Request::FetchOffsets(rustmq_protocol::FetchOffsetsRequest {
                group: "g".into(),
                partitions: vec![rustmq_protocol::TopicPartitions {
                    topic: topic.into(),
                    partitions: vec![0],
                }],
            })
        };
        let is_topic = |t: &str| t == "__audit";
        for entry in ["__closed", "__out.orders"] {
            acl.authorize("bob", &commit(entry), is_topic).unwrap();
        }
        acl.authorize("bob", &fetch("__closed"), is_topic).unwrap();
        // An entry about a topic is fetched by whoever may describe the topic, as
        // `DescribeGroup` shows it; bob may not describe `orders`.
        acl.authorize("bob", &fetch("__out.orders"), is_topic)
            .unwrap_err();
        // `__audit` needs `read` whether it exists or not: committed before it is created,
        // the entry would be its offsets afterwards.
        for topic in ["__audit", "__planted", "orders"] {
            acl.authorize("bob", &commit(topic), is_topic).unwrap_err();
            acl.authorize("bob", &fetch(topic), is_topic).unwrap_err();
        }
    }

    #[test]
    fn rules_parse_from_toml() {
        #[derive(Deserialize)]
        struct F {
            acl: Vec<AclRule>,
        }
        let f: F = toml::from_str(
            r#"
            [[acl]]
            principal = "*"
            resource = "group"
            name = "g-"
            pattern = "prefix"
            operations = ["read", "commit"]
            [[acl]]
            principal = "eve"
            resource = "topic"
            name = "*"
            operations = ["write"]
            permission = "deny"
            "#,
        )
        .unwrap();
        assert_eq!(f.acl[0].pattern, PatternType::Prefix);
        assert_eq!(f.acl[1].permission, Permission::Deny);
        assert!(toml::from_str::<F>(
            "[[acl]]\nprincipal = \"a\"\nresource = \"cluster\"\nname = \"x\"\noperations = []"
        )
        .is_err());
    }
}
