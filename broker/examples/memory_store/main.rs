//! Runs Tern with a store the program brings (`store.rs`, tables in memory) instead of the built-in
//! one under `storage.dir`: a retained message published to a first server is there for a
//! client of a second server started on the same store.
//!
//! Run with `cargo run -p tern-broker --example memory_store`.

mod store;

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use store::MemoryStore;
use tern_broker::storage::Table;
use tern_broker::{Config, QoS, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryStore::default();
    // Anonymous clients on a port the system picks.
    let config = Config::from_yaml(
        "listeners: [{name: mqtt, bind: '127.0.0.1:0'}]\nauth: {allow_anonymous: true}",
        "example",
    )?;

    let first = Server::builder(config.clone())
        .store(store.clone())
        .bind()
        .await?;
    first
        .client()
        .publish("greeting", "kept by the store", QoS::AtLeastOnce, true)?;
    stop(first).await;
    println!(
        "the first server left {} retained message(s) in the store",
        store.rows(Table::Retained)
    );

    let second = Server::builder(config).store(store.clone()).bind().await?;
    let port = second.local_addrs()[0].1.port();
    let shutdown = second.shutdown_token();
    let running = tokio::spawn(second.run(std::future::pending()));

    let (client, mut events) = AsyncClient::new(MqttOptions::new("reader", "127.0.0.1", port), 10);
    client
        .subscribe("greeting", rumqttc::QoS::AtLeastOnce)
        .await?;
    let received = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(publish))) = events.poll().await {
                return publish;
            }
        }
    })
    .await?;
    println!(
        "a client of the second server receives it: {} = {:?} (retain {})",
        received.topic,
        String::from_utf8_lossy(&received.payload),
        received.retain
    );
    shutdown.cancel();
    running.await?;
    Ok(())
}

/// Stops a server that has not been run, the way Ctrl-C would.
async fn stop(server: Server) {
    server.shutdown_token().cancel();
    server.run(std::future::pending()).await;
}
