//! Framing: every message is a 4-byte little-endian length followed by that many bytes. The first
//! frame each side sends is its hello: [`MAGIC`], the protocol version as a little-endian `u16`,
//! then the postcard-encoded hello body. Magic and version sit in a fixed prefix so that a peer
//! of *any* version can read them and say clearly why it refuses.

use super::LinkError;
use std::io::{ErrorKind, Read, Write};

/// First bytes of every hello.
pub const MAGIC: [u8; 8] = *b"MOATLINK";
/// Bytes of the length prefix.
pub const HEADER: usize = 4;

/// Writes one frame (length prefix and payload) in one `write_all`, so a frame is never
/// interleaved with another writer's (there is only one writer per side anyway).
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> Result<(), LinkError> {
    let len =
        u32::try_from(payload.len()).map_err(|_| LinkError::TooLarge { len: payload.len(), max: u32::MAX as usize })?;
    let mut buf = Vec::with_capacity(HEADER + payload.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    Ok(())
}

/// The hello payload: magic, version, body.
pub fn hello_payload(version: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a hello payload into its version and body; refuses anything without the magic.
pub fn parse_hello(payload: &[u8]) -> Result<(u16, &[u8]), LinkError> {
    let (magic, rest) = payload.split_at_checked(MAGIC.len()).ok_or(LinkError::NotMoat)?;
    if magic != MAGIC {
        return Err(LinkError::NotMoat);
    }
    let (version, body) = rest.split_at_checked(2).ok_or(LinkError::NotMoat)?;
    let version = u16::from_le_bytes([version.first().copied().unwrap_or(0), version.get(1).copied().unwrap_or(0)]);
    Ok((version, body))
}

/// What [`FrameReader::poll`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete frame's payload.
    Data(Vec<u8>),
    /// A frame longer than the reader's limit; its bytes were read and discarded, so the
    /// stream stays in step and the sender can be told.
    Oversized(usize),
}

/// Reads frames incrementally from a stream that may return partial data or `WouldBlock`
/// (a non-blocking socket, or one with a read timeout): a frame is returned only once it is
/// complete, and a frame longer than `max` is skipped without being buffered (a bogus length
/// must not make the reader allocate gigabytes).
#[derive(Debug)]
pub struct FrameReader {
    max: usize,
    header: [u8; HEADER],
    header_len: usize,
    body: Vec<u8>,
    /// Length of the frame being read, once its header is complete.
    want: Option<usize>,
    /// Bytes still to discard of an oversized frame.
    skipping: usize,
    oversized: usize,
}

impl FrameReader {
    pub fn new(max: usize) -> FrameReader {
        FrameReader { max, header: [0; HEADER], header_len: 0, body: Vec::new(), want: None, skipping: 0, oversized: 0 }
    }

    /// Reads what the stream has and returns the next complete frame, `Ok(None)` when the stream
    /// has nothing more for now (`WouldBlock`/`TimedOut`), or an error (`Closed` at end of stream).
    pub fn poll(&mut self, r: &mut impl Read) -> Result<Option<Frame>, LinkError> {
        let mut scratch = [0u8; 64 * 1024];
        loop {
            if let Some(want) = self.want
                && self.body.len() == want
            {
                self.want = None;
                self.header_len = 0;
                return Ok(Some(Frame::Data(std::mem::take(&mut self.body))));
            }
            if self.want.is_none() && self.skipping == 0 && self.oversized > 0 {
                let len = std::mem::take(&mut self.oversized);
                self.header_len = 0;
                return Ok(Some(Frame::Oversized(len)));
            }
            // How much to ask for: the rest of the header, of the body, or of the skipped frame.
            let n = if self.skipping > 0 {
                let take = self.skipping.min(scratch.len());
                let buf = scratch.get_mut(..take).unwrap_or_default();
                let n = read_some(r, buf)?;
                self.skipping -= n.unwrap_or(0);
                n
            } else if let Some(want) = self.want {
                let take = (want - self.body.len()).min(scratch.len());
                let buf = scratch.get_mut(..take).unwrap_or_default();
                let n = read_some(r, buf)?;
                if let Some(n) = n {
                    self.body.extend_from_slice(buf.get(..n).unwrap_or_default());
                }
                n
            } else {
                let buf = self.header.get_mut(self.header_len..).unwrap_or_default();
                let n = read_some(r, buf)?;
                self.header_len += n.unwrap_or(0);
                if self.header_len == HEADER {
                    let len = u32::from_le_bytes(self.header) as usize;
                    if len > self.max {
                        self.skipping = len;
                        self.oversized = len;
                    } else {
                        self.want = Some(len);
                        // Grows with the data actually received, never to a claimed length.
                        self.body = Vec::with_capacity(len.min(scratch.len()));
                    }
                }
                n
            };
            if n.is_none() {
                return Ok(None);
            }
        }
    }
}

/// `Some(n)` bytes read (n > 0), `None` when nothing is available now; end of stream is an error.
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> Result<Option<usize>, LinkError> {
    if buf.is_empty() {
        return Ok(Some(0));
    }
    loop {
        match r.read(buf) {
            Ok(0) => return Err(LinkError::Closed),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(None),
            Err(e) => return Err(LinkError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that hands out its bytes a few at a time, with `WouldBlock` in between.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
        block_next: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.block_next {
                self.block_next = false;
                return Err(ErrorKind::WouldBlock.into());
            }
            self.block_next = true;
            let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
            if n == 0 {
                return Ok(0);
            }
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn frames_survive_partial_reads_and_oversized_frames_are_skipped() {
        let mut data = Vec::new();
        write_frame(&mut data, b"hello").unwrap();
        write_frame(&mut data, &[7u8; 100]).unwrap();
        write_frame(&mut data, b"").unwrap();
        write_frame(&mut data, b"after").unwrap();
        let mut stream = Trickle { data, pos: 0, step: 3, block_next: false };
        let mut reader = FrameReader::new(50);
        let mut got = Vec::new();
        loop {
            match reader.poll(&mut stream) {
                Ok(Some(f)) => got.push(f),
                Ok(None) => continue,
                Err(LinkError::Closed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            got,
            vec![
                Frame::Data(b"hello".to_vec()),
                Frame::Oversized(100),
                Frame::Data(Vec::new()),
                Frame::Data(b"after".to_vec())
            ]
        );
    }

    #[test]
    fn hellos_need_the_magic() {
        let p = hello_payload(3, b"body");
        assert_eq!(parse_hello(&p).unwrap(), (3, &b"body"[..]));
        assert!(matches!(parse_hello(b"GET / HTTP/1.1"), Err(LinkError::NotMoat)));
        assert!(matches!(parse_hello(b"MOAT"), Err(LinkError::NotMoat)));
    }
}
