//! Reverse and UDP forwarding from a client node's side (`toxtun forward -R`, `-U`):
//! the listeners it asks its servers for, and its local UDP sockets.

use super::{Cmd, Node, NodeError};

impl Node {
    /// Reverse forwarding, like `ssh -R`: asks `server` to listen on `bind` and to open a
    /// stream toward this node for each connection it accepts there; this node connects
    /// each to `to`. Asked again in every new session until [`Node::unlisten`];
    /// `NodeEvent::ListenReady` / `ListenRefused` say how it went. Returns the listener's
    /// number.
    pub async fn listen(
        &self,
        server: toxtun_proto::PeerId,
        bind: toxtun_proto::Target,
        to: toxtun_proto::Target,
    ) -> Result<u32, NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.cmd
            .send(Cmd::Listen(server, bind, to, tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await
            .map_err(|_| NodeError::Stopped)?
            .map_err(NodeError::Failed)
    }

    /// UDP forwarding (`forward -U`): each datagram that reaches `socket` goes to `target`
    /// through `server`, each source address in a flow of its own, and the target's
    /// answers come back to that address. The server's `udp:` rules decide; a refusal is
    /// logged with its code. Runs until [`Node::stop_udp`] or the node stops. Returns the
    /// forward's number.
    pub async fn forward_udp(
        &self,
        server: toxtun_proto::PeerId,
        socket: tokio::net::UdpSocket,
        target: toxtun_proto::Target,
    ) -> Result<u32, NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.cmd
            .send(Cmd::ForwardUdp(server, socket, target, tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Stops UDP forward `id`: its socket closes and its flows end (the server hears
    /// UCLOSE 2000).
    pub async fn stop_udp(&self, id: u32) {
        let _ = self.cmd.send(Cmd::StopUdp(id)).await;
    }

    /// Gives a listener up: the server stops listening. Streams it opened go on.
    pub async fn unlisten(&self, server: toxtun_proto::PeerId, listener: u32) {
        let _ = self.cmd.send(Cmd::Unlisten(server, listener)).await;
    }
}
