//! Runs Tern inside another program: a custom hook that refuses some publishes and counts connects,
//! and the inline client publishing and subscribing without a network connection.
//!
//! Run with `cargo run -p tern-broker --example embedded`, then try it with the commands in the
//! README's "Embed it" section (`mosquitto_pub -t sensors/temp -m 21` is printed here;
//! `mosquitto_pub -V 5 -q 1 -t forbidden/x -m 1` is refused with *Not authorized*).

use std::sync::atomic::{AtomicU64, Ordering};

use tern_broker::{Access, ClientInfo, Config, Hook, QoS, Server};

/// Refuses publishes under `forbidden/` and counts connections.
#[derive(Default)]
struct Policy {
    connects: AtomicU64,
}

impl Hook for Policy {
    fn name(&self) -> &'static str {
        "example-policy"
    }

    fn authorize_publish(
        &self,
        _client: &ClientInfo,
        topic: &str,
        _qos: QoS,
        _retain: bool,
    ) -> Access {
        if topic.starts_with("forbidden/") {
            Access::Deny
        } else {
            Access::Continue
        }
    }

    fn on_connect(&self, client: &ClientInfo, _session_present: bool) {
        let n = self.connects.fetch_add(1, Ordering::Relaxed) + 1;
        println!("client {} connected ({n} so far)", client.client_id);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder(Config::default())
        .hook(Policy::default())
        .bind()
        .await?;
    for (name, addr) in server.local_addrs() {
        println!("listener {name} on {addr}");
    }

    // The program itself subscribes and publishes through the inline client.
    let client = server.client();
    let mut readings = client.subscribe("sensors/#", QoS::AtLeastOnce)?;
    tokio::spawn(async move {
        while let Some(message) = readings.recv().await {
            println!(
                "{} = {}",
                message.topic,
                String::from_utf8_lossy(&message.payload)
            );
        }
    });
    client.publish("status/embedded", "online", QoS::AtLeastOnce, true)?;

    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
