//! A small blocking HTTP/1.1 client of the shapewise API, for `shapewise recommend --server` and
//! `shapewise worker`: plain `http://` (put a TLS proxy's plain side here), one connection per
//! request, JSON bodies, the bearer token, and time limits on connecting and reading.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection, or it broke: the server is down or unreachable (worth retrying).
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The server answered with an error status and its reason.
    #[error("{server} answered {status}: {detail}")]
    Refused {
        server: String,
        status: u16,
        detail: String,
    },
    /// The answer is not what the API sends.
    #[error("{0}")]
    Malformed(String),
}

/// A shapewise server at `http://HOST:PORT[/PREFIX]`.
#[derive(Clone, Debug)]
pub struct ApiClient {
    server: String,
    authority: String,
    prefix: String,
    token: Option<String>,
    /// Longest wait for the whole answer.
    pub read_timeout: Duration,
}

impl ApiClient {
    /// A client of `server` (`http://HOST:PORT`, an optional path prefix) with an optional
    /// bearer token; refuses any other scheme.
    pub fn new(server: &str, token: Option<&str>) -> Result<ApiClient, String> {
        let rest = server.strip_prefix("http://").ok_or_else(|| {
            format!("the server must be an http:// URL (put a TLS proxy's plain side here), got '{server}'")
        })?;
        let (authority, prefix) = match rest.split_once('/') {
            Some((authority, prefix)) => (authority, format!("/{}", prefix.trim_end_matches('/'))),
            None => (rest, String::new()),
        };
        if authority.is_empty() {
            return Err(format!("no host in '{server}'"));
        }
        Ok(ApiClient {
            server: server.trim_end_matches('/').to_string(),
            authority: authority.to_string(),
            prefix: prefix.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            read_timeout: Duration::from_secs(60),
        })
    }

    /// The server's URL as given.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends `method path` with an optional JSON body; returns the status and the body of a
    /// 2xx answer, or the refusal with the API's `detail`.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let unreachable = |e: std::io::Error| ClientError::Unreachable {
            server: self.server.clone(),
            reason: e.to_string(),
        };
        let address = if self.authority.contains(':') {
            self.authority.clone()
        } else {
            format!("{}:80", self.authority)
        };
        let socket = (address.to_socket_addrs().map_err(unreachable)?.next()).ok_or_else(|| {
            ClientError::Unreachable {
                server: self.server.clone(),
                reason: "the host name resolves to no address".into(),
            }
        })?;
        let mut stream =
            TcpStream::connect_timeout(&socket, Duration::from_secs(10)).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(self.read_timeout))
            .map_err(unreachable)?;
        let payload = match body {
            Some(body) => {
                serde_json::to_vec(body).map_err(|e| ClientError::Malformed(e.to_string()))?
            }
            None => Vec::new(),
        };
        let mut request = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.prefix, self.authority
        );
        if body.is_some() {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                payload.len()
            ));
        } else if method != "GET" {
            request.push_str("Content-Length: 0\r\n");
        }
        if let Some(token) = &self.token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).map_err(unreachable)?;
        stream.write_all(&payload).map_err(unreachable)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(unreachable)?;
        let split = (response.windows(4))
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| ClientError::Unreachable {
                server: self.server.clone(),
                reason: "the connection closed before an HTTP answer".into(),
            })?;
        let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
        let mut content = response[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            content = dechunk(&content);
        }
        let status: u16 = (head.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if (200..300).contains(&status) {
            return Ok((status, content));
        }
        let detail = serde_json::from_slice::<serde_json::Value>(&content)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                format!(
                    "no JSON error ({}): is it a shapewise server?",
                    head.lines().next().unwrap_or("")
                )
            });
        Err(ClientError::Refused {
            server: self.server.clone(),
            status,
            detail,
        })
    }

    /// [`ApiClient::send`] with the answer read as `T`; `None` for an empty 204.
    pub fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Option<T>, ClientError> {
        let (status, content) = self.send(method, path, body)?;
        if status == 204 {
            return Ok(None);
        }
        serde_json::from_slice(&content).map(Some).map_err(|e| {
            ClientError::Malformed(format!(
                "{} answered {method} {path} with an unexpected body: {e}",
                self.server
            ))
        })
    }
}

/// The body of a chunked HTTP/1.1 response.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || data.len() < end + 2 + size {
            break;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[(end + 4 + size).min(data.len())..];
    }
    out
}
