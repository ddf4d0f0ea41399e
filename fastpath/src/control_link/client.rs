//! The agent's end of the link: connect, exchange hellos, send tables, read answers.

use super::frame::{Frame, FrameReader, hello_payload, parse_hello, write_frame};
use super::message::{AgentHello, AgentMessage, FastpathHello, FastpathMessage};
use super::{LinkError, MAX_FASTPATH_FRAME, PROTOCOL_VERSION};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A connection to a fastpath, past the hello exchange.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    reader: FrameReader,
    peer: FastpathHello,
}

/// How long one frame may take to be written before the link is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

impl Client {
    /// Connects and exchanges hellos (both within `timeout`).
    pub fn connect(path: &Path, hello: &AgentHello, timeout: Duration) -> Result<Client, LinkError> {
        Client::connect_with_version(path, PROTOCOL_VERSION, hello, timeout)
    }

    /// [`Client::connect`] announcing another protocol version (tests of the refusal).
    pub fn connect_with_version(
        path: &Path,
        version: u16,
        hello: &AgentHello,
        timeout: Duration,
    ) -> Result<Client, LinkError> {
        let mut stream = UnixStream::connect(path)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let body = postcard::to_allocvec(hello)?;
        write_frame(&mut stream, &hello_payload(version, &body))?;
        let mut reader = FrameReader::new(MAX_FASTPATH_FRAME);
        let deadline = Instant::now() + timeout;
        let payload = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LinkError::Timeout("the fastpath sent no hello in time"));
            }
            stream.set_read_timeout(Some(left))?;
            match reader.poll(&mut stream)? {
                Some(Frame::Data(p)) => break p,
                Some(Frame::Oversized(len)) => return Err(LinkError::TooLarge { len, max: MAX_FASTPATH_FRAME }),
                None => {}
            }
        };
        let (peer_version, body) = parse_hello(&payload)?;
        if peer_version != version {
            return Err(LinkError::Version { peer: peer_version, ours: version });
        }
        let peer: FastpathHello = postcard::from_bytes(body)?;
        Ok(Client { stream, reader, peer })
    }

    /// The socket, to wait for it with `poll` beside other descriptors.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.stream)
    }

    /// The fastpath's hello.
    pub fn peer(&self) -> &FastpathHello {
        &self.peer
    }

    /// Sends one message; returns its encoded size.
    pub fn send(&mut self, msg: &AgentMessage) -> Result<usize, LinkError> {
        let bytes = postcard::to_allocvec(msg)?;
        write_frame(&mut self.stream, &bytes)?;
        Ok(bytes.len())
    }

    /// Sends `payload` as one frame, whatever it holds (tests of the fastpath's validation).
    pub fn send_raw(&mut self, payload: &[u8]) -> Result<(), LinkError> {
        write_frame(&mut self.stream, payload)
    }

    /// The next message, waiting at most `wait`; `Ok(None)` when none came in time (a partly
    /// received frame is kept for the next call).
    pub fn recv(&mut self, wait: Duration) -> Result<Option<FastpathMessage>, LinkError> {
        self.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match self.reader.poll(&mut self.stream)? {
            None => Ok(None),
            Some(Frame::Oversized(len)) => Err(LinkError::TooLarge { len, max: MAX_FASTPATH_FRAME }),
            Some(Frame::Data(bytes)) => Ok(Some(postcard::from_bytes(&bytes)?)),
        }
    }
}
