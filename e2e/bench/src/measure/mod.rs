//! Measurement: the shared clock, latency histograms, sequence accounting (losses and duplicates),
//! the broker's CPU and memory from /proc, the machine description and the per-second progress line.
//!
//! Nothing here talks MQTT; the scenarios feed these types and read their summaries.

pub mod clock;
pub mod latency;
pub mod machine;
pub mod procfs;
pub mod progress;
pub mod sequence;
