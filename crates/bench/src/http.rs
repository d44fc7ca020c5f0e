//! A lean HTTP/1.1 client for the load generator: one keep-alive connection per worker, requests
//! written as prepared bytes in one `write`, answers read into a reused buffer. It understands
//! exactly what the server sends (`Content-Length` bodies, no chunking) and nothing more, so a
//! request costs the generator a couple of syscalls and no allocation.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One keep-alive connection.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Bytes of `buf` that hold the current answer.
    filled: usize,
    /// Where the current answer's body starts and ends in `buf`.
    body: (usize, usize),
    /// Connections opened (1 + reconnects after the server closed one).
    pub connects: u64,
}

/// How a request is written.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub body: Option<&'a [u8]>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: vec![0; 16 * 1024],
            filled: 0,
            body: (0, 0),
            connects: 0,
        }
    }

    async fn stream(&mut self) -> io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.connects += 1;
            self.stream = Some(s);
        }
        self.stream.as_mut().ok_or_else(no_conn)
    }

    /// Writes `req` into `out` as HTTP/1.1 bytes (keep-alive is the default).
    pub fn encode(req: &Request<'_>, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(req.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(req.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if let Some(t) = req.token {
            out.extend_from_slice(b"Authorization: Bearer ");
            out.extend_from_slice(t.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match req.body {
            Some(b) => {
                out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
                out.extend_from_slice(b.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
                out.extend_from_slice(b);
            }
            None if req.method == "GET" => out.extend_from_slice(b"\r\n"),
            None => out.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
    }

    /// Sends prepared request bytes and reads the answer: its status; `body()` is its body.
    /// On an I/O error the connection is dropped (the next request reconnects).
    pub async fn send(&mut self, raw: &[u8]) -> io::Result<u16> {
        match self.exchange(raw).await {
            Ok(status) => Ok(status),
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn exchange(&mut self, raw: &[u8]) -> io::Result<u16> {
        self.stream().await?.write_all(raw).await?;
        self.filled = 0;
        let (head_end, status, length, close) = loop {
            if let Some(parsed) = parse_head(&self.buf[..self.filled])? {
                break parsed;
            }
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let filled = self.filled;
            let stream = self.stream.as_mut().ok_or_else(no_conn)?;
            let n = stream.read(&mut self.buf[filled..]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            self.filled += n;
        };
        let end = head_end + length;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        while self.filled < end {
            let filled = self.filled;
            let stream = self.stream.as_mut().ok_or_else(no_conn)?;
            let n = stream.read(&mut self.buf[filled..end]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection mid-body",
                ));
            }
            self.filled += n;
        }
        self.body = (head_end, end);
        if close {
            self.stream = None;
        }
        Ok(status)
    }

    /// The body of the last answer.
    pub fn body(&self) -> &[u8] {
        &self.buf[self.body.0..self.body.1]
    }

    /// One request with an encoded copy (setup calls, not the measured loop).
    pub async fn call(&mut self, req: Request<'_>) -> io::Result<(u16, Vec<u8>)> {
        let mut raw = Vec::new();
        Conn::encode(&req, &mut raw);
        let status = self.send(&raw).await?;
        Ok((status, self.body().to_vec()))
    }
}

fn no_conn() -> io::Error {
    io::Error::other("no connection")
}

/// Parses a complete response head: (head length, status, content length, connection: close).
/// `None` while the head is incomplete.
fn parse_head(buf: &[u8]) -> io::Result<Option<(usize, u16, usize, bool)>> {
    let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = &buf[..pos];
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") {
        return Err(bad("not an HTTP/1 answer"));
    }
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut length = 0;
    let mut close = false;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("bad content-length"))?;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(bad("chunked answers are not supported by the bench client"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = value.eq_ignore_ascii_case(b"close");
        }
    }
    Ok(Some((pos + 4, status, length, close)))
}

/// The string value of `"key":"..."` in a JSON body (ids and tokens: no escapes in them).
pub fn json_str<'a>(body: &'a [u8], key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":\"");
    let start = body
        .windows(pattern.len())
        .position(|w| w == pattern.as_bytes())?
        + pattern.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[start..start + len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse() {
        let raw = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        let (end, status, len, close) = parse_head(raw).unwrap().unwrap();
        assert_eq!((status, len, close), (201, 7, false));
        assert_eq!(&raw[end..end + len], b"{\"a\":1}");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn json_strings_are_found() {
        let body = br#"{"id":"abc-1","license_id":"l","x":{"id":"no"}}"#;
        assert_eq!(json_str(body, "id"), Some("abc-1"));
        assert_eq!(json_str(body, "license_id"), Some("l"));
        assert_eq!(json_str(body, "missing"), None);
    }
}
