//! Tern's MQTT broker as a library: an MQTT 3.1, 3.1.1 and 5.0 server that a program can embed, extend
//! with [`Hook`]s and talk to in-process through an [`InlineClient`]. The `tern-broker` binary is a
//! thin wrapper around [`Server`].
//!
//! Data flow: [`listener`] accepts → [`connection`] task (codec, keep-alive, flow control) →
//! [`broker`] (admission, session lifecycle, subscriptions, publishing) → [`router`] (subscription
//! trie, shared groups; retained store) → each matching [`session`]'s bounded queue → that
//! session's connection writer, woken through its [`control`] block.
//!
//! The modules form layers; each uses only modules of the layers below it, so no two depend on each
//! other (`shared/tools/modcycles.py broker/src` checks):
//!
//! 1. [`server`]: wires the others together and runs them;
//! 2. [`listener`], [`http`], [`client`]: the ways in (network, admin API, in-process);
//! 3. `connection`: one client's task, from CONNECT to its end;
//! 4. [`sys`]: `$SYS` topics;
//! 5. [`broker`]: the state shared by all clients and the rules that change it;
//! 6. [`router`], [`cluster`], [`backpressure`], [`auth`]: routing and retained messages, the
//!    other nodes of a cluster, publishers waiting for subscribers, the built-in users and ACL;
//! 7. [`session`], [`hook`]: per-client state that outlives a connection, the extension point;
//! 8. [`storage`]: what outlives the process, written to disk by one writer thread;
//! 9. [`control`], [`message`], [`receipt`]: how a connection is woken, what a message is, what
//!    an acknowledgement waits for;
//! 10. [`identity`], [`topic`], [`codec`], [`config`], [`stats`], [`limits`], [`reload`]:
//!     values, parsers and counters that know nothing of the layers above.
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
pub mod cluster;
pub mod codec;
pub mod config;
mod connection;
pub mod control;
pub mod hook;
pub mod http;
pub mod identity;
pub mod limits;
pub mod listener;
pub mod message;
pub mod receipt;
pub mod reload;
pub mod router;
pub mod server;
pub mod session;
pub mod stats;
pub mod storage;
pub mod sys;
pub mod topic;

pub use client::{InlineClient, InlineError, Subscription};
pub use codec::{ProtocolVersion, QoS, ReasonCode};
pub use config::{Config, ConfigError};
pub use hook::{Access, AuthDecision, AuthStep, ClientInfo, ConnectRequest, EnhancedAuth, Hook};
pub use message::Message;
pub use server::{Server, ServerBuilder, ServerError};
