//! The wire side of one health probe: an HTTP/1.1 GET written on a connection the caller keeps,
//! and the answer read back by the framing rules of RFC 9112 §6.3 (no body for 1xx/204/304,
//! chunked, Content-Length, or until the server closes). The head is parsed by `httparse`, the
//! parser hyper itself uses. Nothing beyond what a probe needs: no request body, no upgrades,
//! no pipelining — any answer whose end is in doubt makes the connection not reusable.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A health body is a few hundred bytes; past this the connection is dropped and the probe
/// handed to the shared client, which reads the body whole.
pub(super) const MAX_BODY: usize = 64 * 1024;
const MAX_HEAD: usize = 16 * 1024;
/// hyper's limit too.
const MAX_HEADERS: usize = 100;

pub(super) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The body was read to its end (not cut at [`MAX_BODY`]).
    pub whole: bool,
    /// The connection is at a clean message boundary and the server did not ask to close it.
    pub reusable: bool,
}

#[derive(Debug)]
pub(super) enum WireError {
    /// Not one byte came back (closed or reset first): on a connection that sat idle, the
    /// server may simply have closed it, so the probe deserves one more try on a fresh one.
    NoAnswer(String),
    /// The answer broke off or is not HTTP.
    Broken(String),
}

/// `GET target HTTP/1.1` with the headers a server needs, built once per target.
pub(super) fn request(target: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rollwatch/{}\r\nAccept: */*\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// Writes `request` and reads the answer; `buf` is the connection's reused read buffer.
pub(super) async fn exchange(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> Result<Answer, WireError> {
    buf.clear();
    stream
        .write_all(request)
        .await
        .map_err(|e| WireError::NoAnswer(e.to_string()))?;
    let mut interim = false;
    let head = loop {
        if let Some(head) = parse_head(buf)? {
            buf.drain(..head.len);
            // An interim answer (100 Continue, 103 Early Hints): the real one follows.
            if (100..200).contains(&head.status) {
                interim = true;
                continue;
            }
            break head;
        }
        if buf.len() > MAX_HEAD {
            return Err(WireError::Broken("answer head larger than 16 KiB".into()));
        }
        let first = buf.is_empty() && !interim;
        read_more(stream, buf, "before the answer head ended", first).await?;
    };
    let (body, complete) = match head.framing {
        Framing::Empty => (Vec::new(), true),
        Framing::Length(n) => read_length(stream, buf, n).await?,
        Framing::Chunked => read_chunked(stream, buf).await?,
        Framing::UntilClose => (read_to_close(stream, buf).await?, false),
    };
    Ok(Answer {
        status: head.status,
        body,
        whole: complete,
        reusable: complete && head.keep_alive && buf.is_empty(),
    })
}

#[derive(Debug, PartialEq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    len: usize,
    framing: Framing,
    keep_alive: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WireError::Broken(format!("not an HTTP answer: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let version_1_1 = response.version == Some(1);
    let (mut chunked, mut te, mut length, mut close, mut keep) = (false, false, None, false, false);
    for h in response.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let tokens = || value.split(',').map(|t| t.trim().to_ascii_lowercase());
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            chunked = tokens().next_back().is_some_and(|t| t == "chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // A list of equal values (`2, 2`) is one length, as hyper reads it.
            for v in value.split(',') {
                let n: usize = v.trim().parse().map_err(|_| {
                    WireError::Broken(format!("invalid Content-Length {:?}", value.trim()))
                })?;
                if length.is_some_and(|l| l != n) {
                    return Err(WireError::Broken(
                        "conflicting Content-Length values".into(),
                    ));
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= tokens().any(|t| t == "close");
            keep |= tokens().any(|t| t == "keep-alive");
        }
    }
    let framing = match (status, te, chunked, length) {
        (100..=199 | 204 | 304, ..) => Framing::Empty,
        (_, true, true, _) => Framing::Chunked,
        (_, true, false, _) => Framing::UntilClose,
        (_, false, _, Some(n)) => Framing::Length(n),
        _ => Framing::UntilClose,
    };
    Ok(Some(Head {
        status,
        len,
        framing,
        keep_alive: !close && (version_1_1 || keep),
    }))
}

/// Reads more of the answer into `buf`; the server closing here breaks the answer off.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    what: &str,
    first: bool,
) -> Result<(), WireError> {
    buf.reserve(1024);
    match stream.read_buf(buf).await {
        Ok(0) if first => Err(WireError::NoAnswer("connection closed".into())),
        Ok(0) => Err(WireError::Broken(format!("connection closed {what}"))),
        Ok(_) => Ok(()),
        Err(e) if first => Err(WireError::NoAnswer(e.to_string())),
        Err(e) => Err(WireError::Broken(e.to_string())),
    }
}

/// A `Content-Length` body; past [`MAX_BODY`] only its start is kept (and `false` returned).
async fn read_length(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    n: usize,
) -> Result<(Vec<u8>, bool), WireError> {
    let want = n.min(MAX_BODY);
    while buf.len() < want {
        read_more(stream, buf, "inside the body", false).await?;
    }
    let body = buf.drain(..want).collect();
    Ok((body, want == n))
}

async fn read_to_close(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, WireError> {
    while buf.len() < MAX_BODY {
        buf.reserve(1024);
        match stream.read_buf(buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(WireError::Broken(e.to_string())),
        }
    }
    buf.truncate(MAX_BODY);
    Ok(std::mem::take(buf))
}

async fn read_chunked(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<(Vec<u8>, bool), WireError> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        match dechunk(buf, &mut pos, &mut body).map_err(WireError::Broken)? {
            Progress::Done => {
                buf.drain(..pos);
                return Ok((body, true));
            }
            Progress::Overflow => return Ok((body, false)),
            Progress::NeedMore => read_more(stream, buf, "inside a chunked body", false).await?,
        }
    }
}

#[derive(Debug, PartialEq)]
enum Progress {
    NeedMore,
    Done,
    /// The body passed [`MAX_BODY`]; what fits is in `out`.
    Overflow,
}

/// Decodes the chunks complete in `buf[*pos..]` into `out`, moving `pos` past them.
fn dechunk(buf: &[u8], pos: &mut usize, out: &mut Vec<u8>) -> Result<Progress, String> {
    loop {
        let rest = &buf[*pos..];
        let Some(eol) = find_crlf(rest) else {
            return Ok(Progress::NeedMore);
        };
        let line = String::from_utf8_lossy(&rest[..eol]);
        let digits = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(digits, 16)
            .map_err(|_| format!("invalid chunk size {digits:?}"))?;
        if size == 0 {
            // Optional trailer lines, then the empty line that ends the message.
            let mut at = eol + 2;
            loop {
                let Some(end) = find_crlf(&rest[at..]) else {
                    return Ok(Progress::NeedMore);
                };
                at += end + 2;
                if end == 0 {
                    *pos += at;
                    return Ok(Progress::Done);
                }
            }
        }
        if size > MAX_BODY - out.len() {
            let room = MAX_BODY - out.len();
            let data = &rest[eol + 2..];
            out.extend_from_slice(&data[..room.min(data.len())]);
            return Ok(Progress::Overflow);
        }
        let end = eol + 2 + size;
        if rest.len() < end + 2 {
            return Ok(Progress::NeedMore);
        }
        if &rest[end..end + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        out.extend_from_slice(&rest[eol + 2..end]);
        *pos += end + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e:?}"))
            .expect("complete head")
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(15), true));
        let h = head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\nContent-Length: 3\r\n\r\n",
        );
        assert_eq!(
            h.framing,
            Framing::Chunked,
            "Transfer-Encoding wins over Content-Length"
        );
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        let h = head("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        let h = head("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n");
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!h.keep_alive);
    }

    #[test]
    fn partial_heads_wait_and_garbage_is_refused() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        assert!(matches!(
            parse_head(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(WireError::Broken(_))
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(WireError::Broken(_))
        ));
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Err(WireError::Broken(_))
        ));
    }

    #[test]
    fn chunks_decode_across_reads_with_extensions_and_trailers() {
        let whole = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for split in 0..whole.len() {
            let (mut pos, mut out) = (0, Vec::new());
            let mut progress = dechunk(&whole[..split], &mut pos, &mut out).unwrap();
            if progress != Progress::Done {
                progress = dechunk(whole, &mut pos, &mut out).unwrap();
            }
            assert_eq!(progress, Progress::Done, "split at {split}");
            assert_eq!(out, b"hello, world");
            assert_eq!(&whole[pos..], b"NEXT", "stops at the message end");
        }
        let (mut pos, mut out) = (0, Vec::new());
        assert!(dechunk(b"zz\r\n", &mut pos, &mut out).is_err());
        assert!(dechunk(b"2\r\nabXY", &mut 0, &mut out).is_err());
        let huge = format!("{:x}\r\nab", MAX_BODY + 1);
        let (mut pos, mut out) = (0, Vec::new());
        assert_eq!(
            dechunk(huge.as_bytes(), &mut pos, &mut out),
            Ok(Progress::Overflow)
        );
    }

    #[test]
    fn huge_chunk_size_after_data_is_an_error_not_a_panic() {
        // 20 bytes of data, then a 16-digit chunk size 2^64-20: out.len() + size wraps.
        let mut wire = b"14\r\n01234567890123456789\r\n".to_vec();
        wire.extend_from_slice(b"ffffffffffffffec\r\nabc");
        let (mut pos, mut out) = (0, Vec::new());
        let r = std::panic::catch_unwind(move || dechunk(&wire, &mut pos, &mut out));
        assert!(r.is_ok(), "dechunk panicked on a hostile chunk size");
    }
}
