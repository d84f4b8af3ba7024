//! What the server benchmarks share: a server started in process on a free loopback port, and
//! a plain HTTP/1.1 client (a fresh connection per request, as a simple client would do).

use shapewise::web::{ServeConfig, serve_on};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;

/// One request; the status and the whole response, headers included.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("receive");
    let status = std::str::from_utf8(&response[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, String::from_utf8_lossy(&response).into_owned())
}

/// A server on `db` with `workers` training jobs, serving until [`Server::stop`].
pub struct Server {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(db: PathBuf, workers: usize) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let config = ServeConfig {
            addr,
            db,
            workers,
            ..ServeConfig::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve_on(&config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Server { addr, stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
