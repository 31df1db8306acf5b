//! Each stream's local side — a TCP socket, stdio, or a [`TunnelStream`] — and the task
//! that moves its bytes through two small bounded channels to and from the driver.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use toxtun_proto::{StreamCode, StreamId, Target};

// What one stream can hold in this process, whatever its peer or its local side do (a
// reader that never reads, a target that never reads):
//   towards the peer:  UP_CHANNEL + 1 chunks of READ_CHUNK, plus the core's send buffer
//                      (at most the peer's window for the stream)    = 160 KiB + 256 KiB
//   towards the local: the core's receive buffer (our stream window) + DOWN_CHANNEL + 1
//                      chunks of DOWN_CHUNK, plus a TunnelStream's duplex buffer (64 KiB)
//                                                                   = 256 KiB + 320 KiB + 64 KiB
// so about 1.1 MiB per stream at the first 256 KiB windows, beside the kernel's buffers.
// A window grows (up to 4 MiB) only while its reader keeps up with the peer, and what a
// peer's windows grew, all its streams together, stays within the session window
// (16 MiB): so per peer add at most 16 MiB each way to the figure above. Sent bytes wait
// for their acknowledgement inside those windows (the frame log, or the fast path's
// packets in flight, which are further capped at 4 MiB per peer by its congestion
// window), and each peer's Tox queue holds at most 128 lossless and 256 lossy packets
// (0.5 MiB).

/// Bytes read from a local socket at once.
pub(super) const READ_CHUNK: usize = 32 * 1024;
/// Chunks in flight from a local socket to the driver, per stream.
pub(super) const UP_CHANNEL: usize = 4;
/// Chunks in flight from the driver to a local socket, per stream.
pub(super) const DOWN_CHANNEL: usize = 4;
/// The most bytes one message to a stream's local side carries.
pub(super) const DOWN_CHUNK: usize = 64 * 1024;
/// What the local side of a stream sends to the driver.
pub(super) enum Up {
    Data(Bytes),
    /// The local side finished writing (EOF).
    Fin,
    /// The local side failed.
    Abort(StreamCode),
}

/// What the driver sends to the local side of a stream.
#[derive(Debug)]
pub(super) enum Down {
    /// Packets' payloads, in order, at most `DOWN_CHUNK` bytes together: written with one
    /// vectored write, not gathered by a copy first.
    Data(Vec<Bytes>),
    /// The peer finished: shut down our write side.
    Fin,
    /// The stream was reset or refused.
    Reset(StreamCode),
}

/// Notes from stream tasks to the driver.
pub(super) enum Note {
    /// A chunk (or the end) waits in the stream's up channel.
    Up(StreamId),
    /// The stream's task consumed a down chunk: room to read more from the endpoint.
    DownSpace(StreamId),
    /// A connection to a target for an incoming stream succeeded or failed.
    Connected(StreamId, Result<TcpStream, StreamCode>),
    /// A reload took this client's admission away a moment ago (its CLOSE has had time
    /// to leave): forget it as a friend, unless a later reload listed it again.
    Unfriend(toxtun_proto::PeerId),
    /// A server's socket for a client's listener is bound (or could not be).
    Listened(
        toxtun_proto::PeerId,
        u32,
        Target,
        Result<tokio::net::TcpListener, StreamCode>,
    ),
    /// A connection arrived on a client's listener.
    ReverseConn(toxtun_proto::PeerId, u32, TcpStream),
    /// A server's socket toward a UDP flow's target is bound (or could not be).
    FlowBound(
        toxtun_proto::PeerId,
        u32,
        Target,
        Result<tokio::net::UdpSocket, StreamCode>,
    ),
}

/// The driver's end of one stream's channels.
pub(super) struct StreamIo {
    pub(super) up: mpsc::Receiver<Up>,
    /// A chunk the endpoint took only part of (waiting for credit).
    pub(super) pending: Option<Bytes>,
    pub(super) down: mpsc::Sender<Down>,
    /// Our FIN was given to the endpoint.
    pub(super) fin_sent: bool,
}

/// The stream task's end of one stream's channels.
pub(super) struct StreamPipes {
    pub(super) id: StreamId,
    pub(super) up: mpsc::Sender<Up>,
    pub(super) down: mpsc::Receiver<Down>,
    pub(super) notes: mpsc::UnboundedSender<Note>,
    /// What a failure of the local side means to the peer: `TargetIo` on a server (its
    /// connection to the target failed), `Cancelled` on a client (the application that
    /// used the tunnel hung up, a curl reaching its `--max-time`, a browser tab closed).
    pub(super) local_failure: StreamCode,
}

pub(super) fn pipes(
    id: StreamId,
    notes: &mpsc::UnboundedSender<Note>,
    local_failure: StreamCode,
) -> (StreamIo, StreamPipes) {
    let (up_tx, up_rx) = mpsc::channel(UP_CHANNEL);
    let (down_tx, down_rx) = mpsc::channel(DOWN_CHANNEL);
    (
        StreamIo {
            up: up_rx,
            pending: None,
            down: down_tx,
            fin_sent: false,
        },
        StreamPipes {
            id,
            up: up_tx,
            down: down_rx,
            notes: notes.clone(),
            local_failure,
        },
    )
}

/// One tunnelled stream as a byte stream (tokio's `AsyncRead` + `AsyncWrite`). Shutting
/// down its write side sends FIN (the other direction goes on); it reads end of stream
/// when the peer finishes, or when the stream is reset or refused (the node's events say
/// why, with the code).
#[derive(Debug)]
pub struct TunnelStream {
    pub(super) id: StreamId,
    pub(super) io: tokio::io::DuplexStream,
    pub(super) cmd: mpsc::Sender<super::Cmd>,
}

impl TunnelStream {
    /// The stream's ID.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Resets the stream with `code` (RST to the peer), discarding what is unsent: for a
    /// local side that gave up, which is not the same as finishing. Dropping the stream
    /// instead finishes it (FIN).
    pub async fn reset(self, code: StreamCode) {
        let _ = self.cmd.send(super::Cmd::Reset(self.id, code)).await;
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Moves one stream's bytes between a local byte stream and the driver's channels, until
/// both directions are done or the stream is reset (then the local side is dropped).
pub(super) async fn run_stream<S>(io: S, mut p: StreamPipes)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let id = p.id;
    let (mut rd, mut wr) = tokio::io::split(io);
    // Read straight into the buffer the chunk is handed on in (no copy out of a scratch
    // buffer). The core keeps the chunk until its bytes are copied into packets, so a
    // 32 KiB allocation, shared by the reads that filled it, lives that long at most.
    let mut buf = BytesMut::new();
    let (mut read_done, mut write_done) = (false, false);
    while !(read_done && write_done) {
        if buf.capacity() < READ_CHUNK / 2 {
            buf = BytesMut::with_capacity(READ_CHUNK);
        }
        tokio::select! {
            r = rd.read_buf(&mut buf), if !read_done => {
                let msg = match r {
                    Ok(0) => { read_done = true; Up::Fin }
                    Ok(_) => Up::Data(buf.split().freeze()),
                    Err(_) => { read_done = true; write_done = true; Up::Abort(p.local_failure) }
                };
                // Waits while the stream has no credit: the socket is not read meanwhile.
                if p.up.send(msg).await.is_err() {
                    return; // the stream is gone (reset)
                }
                let _ = p.notes.send(Note::Up(id));
            }
            d = p.down.recv(), if !write_done => match d {
                Some(Down::Data(chunks)) => {
                    if write_all_vectored(&mut wr, chunks).await.is_err() {
                        let _ = p.up.try_send(Up::Abort(p.local_failure));
                        let _ = p.notes.send(Note::Up(id));
                        return;
                    }
                    let _ = p.notes.send(Note::DownSpace(id));
                }
                Some(Down::Fin) => {
                    let _ = wr.shutdown().await;
                    write_done = true;
                }
                // Reset or refused (or the node stopped): drop the local side at once.
                Some(Down::Reset(code)) => {
                    tracing::debug!(stream = %id, code = code.code(), "stream reset: {code}");
                    return;
                }
                None => return,
            },
        }
    }
}

/// Writes every chunk, in order, with as few (vectored) writes as the socket allows.
pub(super) async fn write_all_vectored<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut chunks: Vec<Bytes>,
) -> io::Result<()> {
    use bytes::Buf;
    let mut first = 0;
    loop {
        while chunks.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
        if first == chunks.len() {
            return Ok(());
        }
        let slices: Vec<io::IoSlice<'_>> = chunks[first..]
            .iter()
            .map(|c| io::IoSlice::new(c))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let c = &mut chunks[first];
            let k = n.min(c.len());
            c.advance(k);
            n -= k;
            if c.is_empty() {
                first += 1;
            }
        }
    }
}

/// Connects to a target for an incoming stream; the rules were checked by the endpoint
/// (a name target was allowed by name, so any address it resolves to is what was allowed).
pub(super) async fn connect_target(
    target: Target,
    timeout: Duration,
) -> Result<TcpStream, StreamCode> {
    let host = target.host.to_wire();
    match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), target.port))).await {
        Err(_) => Err(StreamCode::TargetTimeout),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Err(StreamCode::TargetRefused)
        }
        Ok(Err(_)) => Err(StreamCode::TargetUnreachable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    /// A writer that takes at most 5 bytes per call, from the first non-empty slice only
    /// (as a socket with a full buffer, or a writer without vectored writes, does).
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(5);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn vectored_writes_deliver_every_chunk_in_order_through_short_writes() {
        let chunks: Vec<Bytes> = ["abc", "", "defghijk", "", "l", "mnopqrstu", ""]
            .iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        let mut w = Trickle(Vec::new());
        write_all_vectored(&mut w, chunks).await.unwrap();
        assert_eq!(w.0, b"abcdefghijklmnopqrstu");
        write_all_vectored(&mut w, vec![Bytes::new()])
            .await
            .unwrap();
        assert_eq!(w.0.len(), 21, "empty chunks write nothing and do not fail");
    }
}
