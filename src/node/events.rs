//! containerd's image events (`/images/create|update|delete` in namespace `k8s.io`) as a wake-up
//! signal for the reconcile loop: someone deleted an image, or the runtime came back. The events
//! themselves are not trusted as state; the loop lists the runtime again.

use std::path::PathBuf;
use std::time::Duration;

use containerd_client::services::v1::SubscribeRequest;
use containerd_client::services::v1::events_client::EventsClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{K8S_NAMESPACE, unix_channel};

/// Subscribe to image events on `socket`, reconnecting with backoff. Each event, and each
/// (re)connection, sends one wake-up; bursts coalesce (the channel holds one).
pub fn watch_image_events(socket: PathBuf, cancel: CancellationToken) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let filter = format!(r#"namespace=={K8S_NAMESPACE},topic~="^/images/""#);
        let mut delay = Duration::from_millis(500);
        loop {
            let mut client = EventsClient::new(unix_channel(&socket));
            let req = SubscribeRequest {
                filters: vec![filter.clone()],
            };
            let subscribed = tokio::select! {
                _ = cancel.cancelled() => return,
                r = client.subscribe(req) => r,
            };
            match subscribed {
                Ok(resp) => {
                    tracing::debug!("subscribed to containerd image events");
                    delay = Duration::from_millis(500);
                    let _ = tx.try_send(());
                    let mut stream = resp.into_inner();
                    loop {
                        let msg = tokio::select! {
                            _ = cancel.cancelled() => return,
                            m = stream.message() => m,
                        };
                        match msg {
                            Ok(Some(envelope)) => {
                                tracing::debug!(topic = %envelope.topic, "containerd image event");
                                let _ = tx.try_send(());
                            }
                            Ok(None) | Err(_) => break,
                        }
                    }
                    tracing::debug!("containerd event stream ended; resubscribing");
                }
                Err(e) => {
                    tracing::debug!(error = %e, retry_in = ?delay, "cannot subscribe to containerd events")
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    });
    rx
}
