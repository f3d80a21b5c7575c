//! `rustmq groups list|describe`: membership, assignment, committed offsets and lag.

use std::collections::BTreeSet;

use rustmq::{GroupDescription, RustMqClient};
use serde_json::json;

use super::{outln, Out};
use crate::args::{Format, GroupsCommand};
use crate::error::CliError;

/// One partition of a topic the group reads or has committed for.
struct PartitionLag {
    topic: String,
    partition: u32,
    committed: Option<u64>,
    end: u64,
    owner: Option<String>,
}

impl PartitionLag {
    /// Records still stored and not yet consumed: without a commit everything stored counts,
    /// and records retention deleted past a commit never count (they can never be consumed;
    /// the consumer's own lag counts the same way).
    fn lag(&self, log_start: u64) -> u64 {
        self.end
            .saturating_sub(self.committed.unwrap_or(log_start).max(log_start))
    }
}

pub(crate) async fn run(client: &RustMqClient, command: GroupsCommand) -> Result<(), CliError> {
    let mut out = Out::new();
    match command {
        GroupsCommand::List { format } => {
            for group in client.list_groups().await? {
                match format {
                    Format::Text => outln!(out, "{group}")?,
                    Format::Json => outln!(out, "{}", json!({ "group": group }))?,
                }
            }
        }
        GroupsCommand::Describe { group, format } => {
            let description = client.describe_group(&group).await?;
            let partitions = lag(client, &description).await?;
            match format {
                Format::Json => print_json(&mut out, &description, &partitions)?,
                Format::Text => print_text(&mut out, &description, &partitions)?,
            }
        }
    }
    out.finish()
}

/// Every partition of every topic the group is assigned or has committed offsets for, with
/// the partition's end offset (and log start, for lag without a commit).
async fn lag(
    client: &RustMqClient,
    g: &GroupDescription,
) -> Result<Vec<(PartitionLag, u64)>, CliError> {
    let topics: BTreeSet<&str> = g
        .offsets
        .iter()
        .map(|o| o.topic.as_str())
        .chain(
            g.members
                .iter()
                .flat_map(|m| m.assignment.iter().map(|(t, _)| t.as_str())),
        )
        .collect();
    let mut out = Vec::new();
    for topic in topics {
        let description = match client.describe_topic(topic).await {
            Ok(d) => d,
            // Committed offsets can outlive a deleted topic.
            Err(rustmq::ClientError::TopicNotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        for p in &description.partitions {
            out.push((
                PartitionLag {
                    topic: topic.to_owned(),
                    partition: p.partition,
                    committed: g.committed(topic, p.partition),
                    end: p.high_watermark,
                    owner: g.owner(topic, p.partition).map(|m| m.member_id.clone()),
                },
                p.log_start_offset,
            ));
        }
    }
    Ok(out)
}

fn print_text(
    out: &mut Out,
    g: &GroupDescription,
    partitions: &[(PartitionLag, u64)],
) -> Result<(), CliError> {
    outln!(
        out,
        "group {} ({}, generation {}, {} member(s))",
        g.name,
        g.state,
        g.generation,
        g.members.len()
    )?;
    if !g.members.is_empty() {
        let rows: Vec<Vec<String>> = g
            .members
            .iter()
            .map(|m| {
                let assignment: Vec<String> = m
                    .assignment
                    .iter()
                    .map(|(t, ps)| {
                        let ps: Vec<String> = ps.iter().map(u32::to_string).collect();
                        format!("{t}[{}]", ps.join(","))
                    })
                    .collect();
                vec![
                    m.member_id.clone(),
                    m.client_id.clone(),
                    assignment.join(" "),
                ]
            })
            .collect();
        outln!(out)?;
        out.table(&["MEMBER", "CLIENT", "ASSIGNMENT"], &rows)?;
    }
    let rows: Vec<Vec<String>> = partitions
        .iter()
        .map(|(p, start)| {
            vec![
                p.topic.clone(),
                p.partition.to_string(),
                p.committed
                    .map_or_else(|| "-".to_owned(), |c| c.to_string()),
                p.end.to_string(),
                p.lag(*start).to_string(),
                p.owner.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    outln!(out)?;
    out.table(
        &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "OWNER"],
        &rows,
    )
}

fn print_json(
    out: &mut Out,
    g: &GroupDescription,
    partitions: &[(PartitionLag, u64)],
) -> Result<(), CliError> {
    let members: Vec<_> = g
        .members
        .iter()
        .map(|m| {
            let assignment: Vec<_> = m
                .assignment
                .iter()
                .map(|(t, ps)| json!({"topic": t, "partitions": ps}))
                .collect();
            json!({"member_id": m.member_id, "client_id": m.client_id, "assignment": assignment})
        })
        .collect();
    let partitions: Vec<_> = partitions
        .iter()
        .map(|(p, start)| {
            json!({
                "topic": p.topic,
                "partition": p.partition,
                "committed": p.committed,
                "end": p.end,
                "lag": p.lag(*start),
                "owner": p.owner,
            })
        })
        .collect();
    outln!(
        out,
        "{}",
        json!({
            "group": g.name,
            "state": g.state,
            "generation": g.generation,
            "members": members,
            "partitions": partitions,
        })
    )
}

#[cfg(test)]
mod tests {
    use super::PartitionLag;

    /// Records retention deleted past a commit are not lag; without a commit everything stored
    /// is.
    #[test]
    fn lag_counts_only_what_is_still_stored() {
        let lag = |committed| {
            PartitionLag {
                topic: "t".into(),
                partition: 0,
                committed,
                end: 100,
                owner: None,
            }
            .lag(40)
        };
        assert_eq!(lag(Some(90)), 10);
        assert_eq!(lag(Some(10)), 60, "a commit below the log start");
        assert_eq!(lag(None), 60);
        assert_eq!(lag(Some(120)), 0);
    }
}
