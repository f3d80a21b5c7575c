//! Tuple structs name their key field by index.

use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "users.renamed", key = 1)]
struct UserRenamed(String, Vec<u8>);

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "clicks", key = 0)]
struct Click(u64);

fn main() {
    let renamed = UserRenamed("alice".into(), vec![1, 2, 3]);
    assert_eq!(renamed.key().as_deref(), Some(&[1u8, 2, 3][..]));
    assert_eq!(Click(7).key().as_deref(), Some(&b"7"[..]));
}
