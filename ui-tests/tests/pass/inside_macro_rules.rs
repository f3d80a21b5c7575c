//! Topics and handlers declared by a `macro_rules!`: the generated code must not depend on
//! hygiene (local variables and `self` behave differently there).

use rustmq::{handler, Handler, Metadata, Topic};
use serde::{Deserialize, Serialize};

macro_rules! event {
    ($name:ident, $topic:literal, $handler:ident) => {
        #[derive(Serialize, Deserialize, Topic)]
        #[topic(name = $topic, key = "id")]
        struct $name {
            id: u64,
        }

        #[handler(group = $topic)]
        async fn $handler(message: $name, meta: Metadata) {
            let _ = (message.id, meta);
        }
    };
}

event!(Created, "created", on_created);
event!(Deleted, "deleted", on_deleted);

macro_rules! enum_event {
    ($payload:ty) => {
        #[derive(Serialize, Deserialize, Topic)]
        #[topic(name = "changes", key = 0)]
        enum Change {
            Set($payload),
            Unset($payload),
        }

        #[handler]
        async fn on_change(change: Change, meta: Metadata) {
            let _ = (change, meta);
        }
    };
}

enum_event!(String);

fn main() {
    assert_eq!(Created { id: 3 }.key().as_deref(), Some(&b"3"[..]));
    assert_eq!(Deleted::NAME, "deleted");
    assert_eq!(Change::Unset("k".into()).key().as_deref(), Some(&b"k"[..]));
    assert_eq!(
        Handler::<_, ()>::options(&on_created).group,
        Some("created")
    );
    let _ = (on_deleted, on_change);
}
