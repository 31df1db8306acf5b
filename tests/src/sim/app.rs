//! The scripted application of every node: accepting, writing, reading (each byte checked), finishing.

use toxtun_proto::{ReadError, StreamCode, StreamId, WriteError};

use super::{byte_at, bytes_at, Sim, SimFailure};

impl Sim {
    /// The scripted application of node `i`: accept or refuse, write, read and check.
    pub(super) fn app(&mut self, i: usize) -> Result<bool, SimFailure> {
        let mut moved = false;
        for stream in std::mem::take(&mut self.nodes[i].incoming) {
            moved |= self.app_accept(i, stream)?;
        }
        for stream in std::mem::take(&mut self.nodes[i].try_write) {
            moved |= self.app_write(i, stream)?;
        }
        for stream in std::mem::take(&mut self.nodes[i].try_read) {
            moved |= self.app_read(i, stream)?;
        }
        Ok(moved)
    }

    /// Node `i`'s application takes an incoming stream: refuses it if told to, else
    /// accepts it and plans the bytes it sends back.
    fn app_accept(&mut self, i: usize, stream: StreamId) -> Result<bool, SimFailure> {
        let moved = true;
        let ix = self.index(stream)?;
        if self.streams[ix].ended[1].is_some() {
            return Ok(moved); // reset (e.g. by a link flap) before the application got to it
        }
        if self.nodes[i].refuse_next {
            self.nodes[i].refuse_next = false;
            self.nodes[i]
                .endpoint
                .refuse(stream, StreamCode::TargetRefused)
                .map_err(|e| SimFailure(format!("refuse: {e}")))?;
            self.end_side(ix, 1, "refused by its application".into())?;
            return Ok(moved);
        }
        self.nodes[i]
            .endpoint
            .accept(stream)
            .map_err(|e| SimFailure(format!("accept: {e}")))?;
        let (down, fin) = self.streams[ix].down_plan;
        let f = &mut self.streams[ix].flows[1];
        f.pending += down;
        f.fin_wanted |= fin;
        self.nodes[i].try_write.insert(stream);
        Ok(moved)
    }

    /// Node `i`'s application writes what it still wants to on `stream`, then FIN.
    fn app_write(&mut self, i: usize, stream: StreamId) -> Result<bool, SimFailure> {
        let mut moved = false;
        let Some(&ix) = self.by_id.get(&stream) else {
            return Ok(moved);
        };
        let Some(side) = self.streams[ix].side_of(i) else {
            return Ok(moved);
        };
        if self.streams[ix].ended[side].is_some()
            || (side == 1 && !self.streams[ix].seen_by_acceptor)
        {
            return Ok(moved);
        }
        loop {
            let f = &self.streams[ix].flows[side];
            if f.pending == 0 {
                break;
            }
            let len = f.pending.min(64 * 1024) as usize;
            let data = bytes_at(f.seed, f.written, len);
            match self.nodes[i].endpoint.write(stream, data) {
                Ok(n) => {
                    moved = true;
                    let f = &mut self.streams[ix].flows[side];
                    f.pending -= n as u64;
                    f.written += n as u64;
                    if n < len {
                        break;
                    }
                }
                Err(WriteError::Blocked) => break,
                // It ended during this pass (e.g. closed by our own FIN): the event
                // follows in the next drain.
                Err(WriteError::UnknownStream) => break,
                Err(e) => fail!("write on live stream {stream} failed: {e}"),
            }
        }
        let f = &self.streams[ix].flows[side];
        if f.pending == 0 && f.fin_wanted && !f.fin_sent {
            match self.nodes[i].endpoint.finish(stream) {
                Ok(()) => {
                    moved = true;
                    self.streams[ix].flows[side].fin_sent = true;
                }
                Err(toxtun_proto::StreamError::UnknownStream) => {}
                Err(e) => fail!("finish on live stream {stream} failed: {e}"),
            }
        }
        Ok(moved)
    }

    /// Node `i`'s application reads `stream`, checking every byte and the end.
    fn app_read(&mut self, i: usize, stream: StreamId) -> Result<bool, SimFailure> {
        let mut moved = false;
        let Some(&ix) = self.by_id.get(&stream) else {
            return Ok(moved);
        };
        let Some(side) = self.streams[ix].side_of(i) else {
            return Ok(moved);
        };
        if self.streams[ix].ended[side].is_some()
            || self.streams[ix].stalled[side]
            || (side == 1 && !self.streams[ix].seen_by_acceptor)
        {
            return Ok(moved);
        }
        loop {
            match self.nodes[i].endpoint.read(stream, usize::MAX) {
                Ok(Some(chunk)) => {
                    moved = true;
                    let f = &mut self.streams[ix].flows[1 - side];
                    for (k, b) in chunk.iter().enumerate() {
                        let off = f.read + k as u64;
                        if *b != byte_at(f.seed, off) {
                            fail!("stream {stream}: byte {off} differs (lost, duplicated or reordered bytes)");
                        }
                    }
                    f.read += chunk.len() as u64;
                    self.stats.bytes_checked += chunk.len() as u64;
                    if f.read > f.written {
                        fail!(
                            "stream {stream}: read {} bytes, only {} written",
                            f.read,
                            f.written
                        );
                    }
                }
                Ok(None) => {
                    let f = &mut self.streams[ix].flows[1 - side];
                    if !f.eof {
                        moved = true;
                        if !f.fin_sent || f.read != f.written {
                            fail!(
                                "stream {stream}: end of stream after {} of {} bytes",
                                f.read,
                                f.written
                            );
                        }
                        f.eof = true;
                    }
                    break;
                }
                Err(ReadError::Blocked) | Err(ReadError::UnknownStream) => break,
                Err(e) => fail!("read on live stream {stream} failed: {e}"),
            }
        }
        Ok(moved)
    }
}
