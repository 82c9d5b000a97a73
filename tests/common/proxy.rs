//! A TCP proxy in front of the registry that can slow its answers down (a pull then takes as
//! long as a test needs) and cut every open connection (a registry dying mid-transfer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

struct Shared {
    upstream: String,
    /// Bytes per second towards the client; 0 = unlimited.
    rate: AtomicU64,
    /// Bytes sent towards clients so far.
    down: AtomicU64,
    /// Every change closes the connections open at that time.
    epoch: watch::Sender<u64>,
}

pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            rate: AtomicU64::new(0),
            down: AtomicU64::new(0),
            epoch: watch::channel(0).0,
        });
        let cancel = CancellationToken::new();
        let (s, c) = (shared.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = c.cancelled() => return,
                    conn = listener.accept() => conn,
                };
                if let Ok((client, _)) = conn {
                    tokio::spawn(relay(client, s.clone(), c.clone()));
                }
            }
        });
        Self {
            addr,
            shared,
            cancel,
        }
    }

    /// `127.0.0.1:PORT`: the registry host to use in image references.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn set_rate(&self, bytes_per_second: u64) {
        self.shared.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Closes every open connection now.
    pub fn cut(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    pub fn bytes_down(&self) -> u64 {
        self.shared.down.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.cut();
    }
}

async fn relay(client: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut epoch = shared.epoch.subscribe();
    epoch.borrow_and_update();
    let Ok(upstream) = TcpStream::connect(&shared.upstream).await else {
        return; // the registry is down: the client sees its connection closed
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let up = async { tokio::io::copy(&mut cr, &mut uw).await };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
            shared.down.fetch_add(n as u64, Ordering::Relaxed);
            let rate = shared.rate.load(Ordering::Relaxed);
            if rate > 0 {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = epoch.changed() => {}
        _ = up => {}
        _ = down => {}
    }
}
