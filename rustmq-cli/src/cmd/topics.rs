//! `rustmq topics create|list|describe|delete`

use rustmq::{RustMqClient, TopicSettings};
use serde_json::json;

use super::{outln, Out};
use crate::args::{Format, TopicsCommand};
use crate::error::CliError;

pub(crate) async fn run(client: &RustMqClient, command: TopicsCommand) -> Result<(), CliError> {
    let mut out = Out::new();
    match command {
        TopicsCommand::Create {
            name,
            partitions,
            retention,
            retention_bytes,
            segment_bytes,
        } => {
            let mut settings = TopicSettings::new();
            settings.retention = retention;
            settings.retention_bytes = retention_bytes;
            settings.segment_bytes = segment_bytes;
            client
                .create_topic_with(&name, partitions, settings)
                .await?;
            outln!(out, "created topic {name} with {partitions} partition(s)")?;
        }
        TopicsCommand::List { format } => {
            let topics = client.list_topics().await?;
            match format {
                Format::Json => {
                    for t in topics {
                        outln!(
                            out,
                            "{}",
                            json!({"name": t.name, "partitions": t.partitions})
                        )?;
                    }
                }
                Format::Text => {
                    let rows: Vec<Vec<String>> = topics
                        .iter()
                        .map(|t| vec![t.name.clone(), t.partitions.to_string()])
                        .collect();
                    out.table(&["TOPIC", "PARTITIONS"], &rows)?;
                }
            }
        }
        TopicsCommand::Describe { name, format } => {
            let t = client.describe_topic(&name).await?;
            let s = &t.settings;
            match format {
                Format::Json => {
                    let partitions: Vec<_> = t
                        .partitions
                        .iter()
                        .map(|p| {
                            json!({
                                "partition": p.partition,
                                "log_start_offset": p.log_start_offset,
                                "high_watermark": p.high_watermark,
                                "records": p.record_count(),
                                "size_bytes": p.size_bytes,
                                "segments": p.segments,
                            })
                        })
                        .collect();
                    outln!(
                        out,
                        "{}",
                        json!({
                            "name": t.name,
                            "retention_ms": s.retention.map(|d| d.as_millis() as u64),
                            "retention_bytes": s.retention_bytes,
                            "segment_bytes": s.segment_bytes,
                            "partitions": partitions,
                        })
                    )?;
                }
                Format::Text => {
                    let or_default =
                        |v: Option<String>| v.unwrap_or_else(|| "broker default".into());
                    outln!(
                        out,
                        "topic {}: {} partition(s)",
                        t.name,
                        t.partition_count()
                    )?;
                    outln!(
                        out,
                        "retention {}, retention bytes {}, segment bytes {}",
                        or_default(s.retention.map(|d| {
                            humantime_serde::re::humantime::format_duration(d).to_string()
                        })),
                        or_default(s.retention_bytes.map(|b| b.to_string())),
                        or_default(s.segment_bytes.map(|b| b.to_string())),
                    )?;
                    let rows: Vec<Vec<String>> = t
                        .partitions
                        .iter()
                        .map(|p| {
                            vec![
                                p.partition.to_string(),
                                p.log_start_offset.to_string(),
                                p.high_watermark.to_string(),
                                p.record_count().to_string(),
                                p.size_bytes.to_string(),
                                p.segments.to_string(),
                            ]
                        })
                        .collect();
                    out.table(
                        &["PARTITION", "START", "END", "RECORDS", "BYTES", "SEGMENTS"],
                        &rows,
                    )?;
                }
            }
        }
        TopicsCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            outln!(out, "deleted topic {name}")?;
        }
    }
    out.finish()
}
