//! The HTTP/1.1 reply reader of the firmware's KBS client: the status,
//! `Set-Cookie` and a `Content-Length` body of one reply the server sent
//! on a connection it then closed (one request per connection, as
//! `umbra-attest serve` and Trustee answer `Connection: close`). RFC 9112
//! §4 (status line), §5 (fields), §6.2 (Content-Length). Everything here
//! comes from the host side of vsock and is hostile input.

/// Why a reply could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// No blank line ends the header block.
    Incomplete,
    /// The status line is not `HTTP/1.x NNN ...`.
    StatusLine,
    /// A header line is not `name: value` or not ASCII.
    Header,
    /// `Content-Length` is not a number or disagrees with the bytes sent.
    Length,
}

/// One reply: status, the `Set-Cookie` value, the body.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    pub status: u16,
    pub set_cookie: Option<&'a str>,
    pub body: &'a [u8],
}

/// Parses the whole reply in `bytes`.
pub fn parse_reply(bytes: &[u8]) -> Result<Reply<'_>, HttpError> {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::Incomplete)?;
    let head = core::str::from_utf8(&bytes[..end]).map_err(|_| HttpError::Header)?;
    let rest = &bytes[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(HttpError::StatusLine)?;
    let mut words = status_line.split(' ');
    let version = words.next().unwrap_or_default();
    let code = words.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(HttpError::StatusLine);
    }
    let status = code.parse::<u16>().map_err(|_| HttpError::StatusLine)?;
    let mut set_cookie = None;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HttpError::Header)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("set-cookie") {
            set_cookie = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = value.parse::<usize>().map_err(|_| HttpError::Length)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Length);
            }
            length = Some(n);
        }
    }
    let body = match length {
        Some(n) if n <= rest.len() => &rest[..n],
        Some(_) => return Err(HttpError::Length),
        // Without a length the body runs to the end of the connection.
        None => rest,
    };
    Ok(Reply {
        status,
        set_cookie,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_cookie_and_body() {
        let reply = b"HTTP/1.1 200 OK\r\nSet-Cookie: kbs-session-id=abc; Path=/\r\n\
                      content-length: 5\r\n\r\nhello trailing";
        assert_eq!(
            parse_reply(reply),
            Ok(Reply {
                status: 200,
                set_cookie: Some("kbs-session-id=abc; Path=/"),
                body: b"hello",
            })
        );
    }

    #[test]
    fn refuses_what_a_server_cannot_mean() {
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 OK\r\n"),
            Err(HttpError::Incomplete)
        );
        assert_eq!(parse_reply(b"SSH-2.0\r\n\r\n"), Err(HttpError::StatusLine));
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort"),
            Err(HttpError::Length)
        );
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            Err(HttpError::Length)
        );
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"),
            Err(HttpError::Header)
        );
        assert_eq!(
            parse_reply(b"HTTP/1.1 2000 OK\r\n\r\n"),
            Err(HttpError::StatusLine)
        );
    }
}
