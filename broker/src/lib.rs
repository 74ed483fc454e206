//! Tern's MQTT broker as a library: an MQTT 3.1, 3.1.1 and 5.0 server that a program can embed, extend
//! with [`Hook`]s and talk to in-process through an [`InlineClient`]. The `tern-broker` binary is a
//! thin wrapper around [`Server`].
//!
//! Data flow: [`listener`] accepts → [`connection`] task (codec, keep-alive, flow control) →
//! [`session`] (state that outlives a connection) → [`router`] (subscription trie, shared groups,
//! retained store) → each matching session's bounded queue → that session's connection writer.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tern_broker::{Config, Server};
//! let server = Server::builder(Config::default()).bind().await?;
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod backpressure;
pub mod broker;
pub mod client;
pub mod codec;
pub mod config;
mod connection;
pub mod hook;
pub mod http;
pub mod limits;
pub mod listener;
pub mod message;
pub mod router;
pub mod server;
pub mod session;
pub mod stats;
pub mod sys;
pub mod topic;

pub use client::{InlineClient, InlineError, Subscription};
pub use codec::{ProtocolVersion, QoS, ReasonCode};
pub use config::{Config, ConfigError};
pub use hook::{Access, AuthDecision, AuthStep, ClientInfo, ConnectRequest, EnhancedAuth, Hook};
pub use message::Message;
pub use server::{Server, ServerBuilder, ServerError};
