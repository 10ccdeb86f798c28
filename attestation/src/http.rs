//! Just enough HTTP/1.1 on a TCP or Unix stream: one request per
//! connection, bounded header and body sizes, a `Content-Length` body.
//! Used by `umbra-attest serve` and `umbra-agent fetch-secret` (the KBS
//! protocol) and by the VMM's control API.

use std::io::{BufRead, BufReader, Read, Write};
use thiserror::Error;

/// Largest header block accepted.
pub const MAX_HEADERS: usize = 16 << 10;
/// Largest body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// Why a message could not be read.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The stream failed.
    #[error("HTTP I/O")]
    Io(#[from] std::io::Error),
    /// Not an HTTP/1.1 message we read.
    #[error("malformed HTTP message: {0}")]
    Parse(&'static str),
    /// Over the size bounds.
    #[error("HTTP message too large")]
    TooLarge,
}

/// A request or a response: start line, headers, body.
#[derive(Debug, Default)]
pub struct Message {
    /// `METHOD PATH HTTP/1.1` or `HTTP/1.1 CODE REASON`.
    pub start: String,
    /// Header names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Message {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of cookie `name`.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

/// Reads one message from `stream`.
pub fn read_message(stream: impl Read) -> Result<Message, HttpError> {
    let mut reader = BufReader::new(stream.take((MAX_HEADERS + MAX_BODY) as u64));
    let mut message = Message::default();
    let mut header_bytes = 0;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return Err(HttpError::Parse("connection closed in the headers"));
        }
        header_bytes += n;
        if header_bytes > MAX_HEADERS {
            return Err(HttpError::TooLarge);
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if message.start.is_empty() {
            if line.is_empty() {
                continue;
            }
            message.start = line.to_string();
            continue;
        }
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Parse("header without ':'"))?;
        message
            .headers
            .push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length = match message.header("content-length") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| HttpError::Parse("bad Content-Length"))?,
        None => 0,
    };
    if length > MAX_BODY {
        return Err(HttpError::TooLarge);
    }
    message.body = vec![0; length];
    reader.read_exact(&mut message.body)?;
    Ok(message)
}

/// Writes a message with `Content-Length` and `Connection: close`.
pub fn write_message(
    mut stream: impl Write,
    start: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), HttpError> {
    let mut head = format!("{start}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    // One write: a head and a body in two segments would wait on Nagle's
    // algorithm for the peer's acknowledgement of the first.
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    stream.write_all(&message)?;
    stream.flush()?;
    Ok(())
}
