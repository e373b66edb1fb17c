//! A raw HTTP/1.1 client over a tokio `TcpStream`, so tests see interim
//! (1xx) responses that reqwest hides, and can break a body off midway.
//! Every read is bounded by a timeout so a broken server fails the test
//! instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ_LIMIT: Duration = Duration::from_secs(20);

/// One response (interim or final).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A client connection.
pub struct Conn {
    pub sock: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let sock = TcpStream::connect(addr).await.expect("connect");
        sock.set_nodelay(true).expect("nodelay");
        Conn {
            sock,
            buf: Vec::new(),
        }
    }

    /// Writes a request head (method, path, headers; `Host` is added).
    pub async fn send_head(&mut self, method: &str, path: &str, headers: &[(&str, String)]) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test.local\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.send(head.as_bytes()).await;
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.expect("write");
        self.sock.flush().await.expect("flush");
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(READ_LIMIT, self.sock.read(&mut chunk))
            .await
            .expect("server answered in time")
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "connection closed inside a body");
        }
        self.buf.drain(..n).collect()
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return String::from_utf8(line[..i].to_vec()).expect("ASCII line");
            }
            assert!(self.fill().await, "connection closed inside a head");
        }
    }

    /// Reads the next response, interim or final. `head_request`: the
    /// request was HEAD, so a final response has no body.
    pub async fn read_response(&mut self, head_request: bool) -> Response {
        let status_line = self.line().await;
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut res = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if status < 200 || status == 204 || status == 304 || head_request {
            return res;
        }
        if let Some(len) = res.header("content-length") {
            let len: usize = len.parse().expect("Content-Length");
            res.body = self.take(len).await;
        } else if res
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            loop {
                let size = self.line().await;
                let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                    .expect("chunk size");
                if size == 0 {
                    while !self.line().await.is_empty() {}
                    break;
                }
                let mut chunk = self.take(size).await;
                res.body.append(&mut chunk);
                assert_eq!(self.take(2).await, b"\r\n");
            }
        } else {
            while self.fill().await {}
            res.body = std::mem::take(&mut self.buf);
        }
        res
    }

    /// Reads responses until the final one; returns the interim ones too.
    pub async fn read_final(&mut self, head_request: bool) -> (Vec<Response>, Response) {
        let mut interim = Vec::new();
        for _ in 0..16 {
            let res = self.read_response(head_request).await;
            if res.status >= 200 {
                return (interim, res);
            }
            interim.push(res);
        }
        panic!("more than 16 interim responses: {interim:?}");
    }

    /// A whole request on this connection; returns (interim, final).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (Vec<Response>, Response) {
        let mut headers = headers.to_vec();
        if !body.is_empty() || matches!(method, "POST" | "PATCH" | "PUT") {
            headers.push(("Content-Length", body.len().to_string()));
        }
        self.send_head(method, path, &headers).await;
        self.send(body).await;
        self.read_final(method == "HEAD").await
    }
}

/// One request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (Vec<Response>, Response) {
    Conn::connect(addr)
        .await
        .request(method, path, headers, body)
        .await
}
