//! The side of those who ask the holder of an identity: `toxtun status`, `toxtun stop`,
//! and a `pipe` that attaches.

use std::path::Path;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::wire::{
    encode_line, read_line, ControlError, DownFrame, ForwardPair, Reply, Request, MAX_REPLY,
};
use super::Role;

/// Connects to `role`'s control socket in `dir`; `None` if no process listens there (no
/// socket, or a dead holder's).
async fn connect(dir: &Path, role: Role) -> Option<UnixStream> {
    UnixStream::connect(role.socket_path(dir)).await.ok()
}

/// Sends `request` and reads the reply; `Ok(None)` if no process holds the identity.
async fn exchange(
    dir: &Path,
    role: Role,
    request: &Request,
) -> Result<Option<(Reply, BufReader<OwnedReadHalf>, OwnedWriteHalf)>, ControlError> {
    let Some(sock) = connect(dir, role).await else {
        return Ok(None);
    };
    let (rd, mut wr) = sock.into_split();
    // A holder that refuses at once (another user, too many connections) may have closed
    // before our request is written: its reply is still there to read.
    let written = wr.write_all(&encode_line(request)).await;
    let mut rd = BufReader::new(rd);
    let line = match read_line(&mut rd, MAX_REPLY).await {
        Ok(line) => line,
        Err(e) => {
            return Err(match written {
                Err(w) => ControlError::Broken(w.to_string()),
                Ok(()) => e,
            })
        }
    };
    let reply: Reply =
        serde_json::from_slice(&line).map_err(|e| ControlError::Broken(format!("reply: {e}")))?;
    Ok(Some((reply, rd, wr)))
}

/// Asks the process holding `role`'s identity in `dir` (a status, a stop); `Ok(None)` if
/// there is none. An error reply comes back as `Ok(Some(Reply::Error { .. }))`.
pub async fn ask(dir: &Path, role: Role, request: &Request) -> Result<Option<Reply>, ControlError> {
    Ok(exchange(dir, role, request).await?.map(|(r, _, _)| r))
}

/// How an attached stream went.
#[derive(Debug, PartialEq, Eq)]
pub enum Attached {
    /// No process holds the identity: nothing was attached.
    NoHolder,
    /// The holder refused the request.
    Refused {
        /// [`ControlError::code`].
        code: u16,
        /// Its words.
        message: String,
    },
    /// The stream ran and ended: 0 cleanly, else its stream code.
    Ended(u16),
    /// Our output went away (ssh exited, a forwarded connection's client hung up): the
    /// holder sees the socket close and resets the stream (2000). Nothing to report.
    OutputClosed,
}

/// Opens a stream to `target` through `server` on the holder's session and carries
/// `input` up and the stream down to `output`, until the stream ends (then `input` is
/// no longer read: as `ssh -W`, the end of the far side ends the pipe).
pub async fn attach<I, O>(
    dir: &Path,
    request: Request,
    input: I,
    output: O,
) -> Result<Attached, ControlError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    match open(dir, request).await? {
        Opening::Open(stream) => stream.relay(input, output).await,
        Opening::Other(outcome) => Ok(outcome),
    }
}

/// What asking the holder to open a stream gave.
#[derive(Debug)]
pub enum Opening {
    /// The stream is open (accepted, with `wait_accepted`): relay it.
    Open(AttachedStream),
    /// Nothing to relay: no holder, a refusal, or (with `wait_accepted`) the server's
    /// refusal as `Ended(code)`.
    Other(Attached),
}

/// A stream the holder opened for us, not yet relayed.
#[derive(Debug)]
pub struct AttachedStream {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

/// Asks the holder of the client identity in `dir` to open the stream `request` names.
pub async fn open(dir: &Path, request: Request) -> Result<Opening, ControlError> {
    let Some((reply, rd, wr)) = exchange(dir, Role::Client, &request).await? else {
        return Ok(Opening::Other(Attached::NoHolder));
    };
    Ok(match reply {
        Reply::Opened { .. } => Opening::Open(AttachedStream { rd, wr }),
        Reply::Refused { code } => Opening::Other(Attached::Ended(code)),
        Reply::Error { code, message } => Opening::Other(Attached::Refused { code, message }),
        other => return Err(ControlError::Broken(format!("unexpected reply {other:?}"))),
    })
}

impl AttachedStream {
    /// Carries `input` up and the stream down to `output` until the stream ends.
    pub async fn relay<I, O>(self, mut input: I, mut output: O) -> Result<Attached, ControlError>
    where
        I: AsyncRead + Unpin + Send + 'static,
        O: AsyncWrite + Unpin,
    {
        let AttachedStream { mut rd, mut wr } = self;
        let up = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut input, &mut wr).await;
            let _ = wr.shutdown().await;
            // The write side lives (half-closed) until the stream ends and this is aborted.
            std::future::pending::<()>().await;
        });
        let mut buf = BytesMut::with_capacity(2 * super::MAX_DATA_FRAME);
        let result = loop {
            match DownFrame::decode(&mut buf) {
                Err(e) => break Err(e),
                Ok(Some(DownFrame::Data(d))) => {
                    if output.write_all(&d).await.is_err() {
                        break Ok(Attached::OutputClosed);
                    }
                    continue;
                }
                Ok(Some(DownFrame::End(code))) => break Ok(Attached::Ended(code)),
                Ok(None) => {}
            }
            // Flush what was written before waiting for more.
            let _ = output.flush().await;
            match rd.read_buf(&mut buf).await {
                Ok(0) => {
                    break Err(ControlError::Broken(
                        "the toxtun process holding the identity went away".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => break Err(ControlError::Broken(e.to_string())),
            }
        };
        let _ = output.flush().await;
        up.abort();
        result
    }
}

/// A `Hold` on the process that holds the identity: it stays (with its session to the
/// server) while this lives.
#[derive(Debug)]
pub struct Hold {
    /// The holder's pid.
    pub pid: u32,
    rd: BufReader<OwnedReadHalf>,
    _wr: OwnedWriteHalf,
}

impl Hold {
    /// Resolves when the holder went away (stopped, or died).
    pub async fn closed(&mut self) {
        let mut byte = [0u8; 1];
        let _ = self.rd.read(&mut byte).await;
    }
}

/// Asks the holder of the client identity in `dir` to keep its session with `server` for
/// as long as the returned [`Hold`] lives. `Ok(Err(reply))` if it refused.
pub async fn hold(
    dir: &Path,
    server: String,
    credential: Option<String>,
    (reverse, udp): (Vec<ForwardPair>, Vec<ForwardPair>),
) -> Result<Option<Result<Hold, Attached>>, ControlError> {
    let request = Request::Hold {
        server,
        credential,
        reverse,
        udp,
    };
    let Some((reply, rd, wr)) = exchange(dir, Role::Client, &request).await? else {
        return Ok(None);
    };
    Ok(Some(match reply {
        Reply::Holding { pid } => Ok(Hold { pid, rd, _wr: wr }),
        Reply::Error { code, message } => Err(Attached::Refused { code, message }),
        other => return Err(ControlError::Broken(format!("unexpected reply {other:?}"))),
    }))
}
