//! Every numeric code toxtun speaks: the protocol's own session and stream codes (on the
//! wire in HELLO_REJECT, CLOSE, OPEN_ERR and RST), and the seed's status codes (101–104,
//! 201–204, 301–302, 401–402), which stay the stable codes of events and of the daemon's
//! `--json` output.
//!
//! Codes are stable: a number, once given a meaning, keeps it. Unknown numbers from a newer
//! peer decode to the `Unknown` variant rather than failing.

macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $num:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A code this version does not know (sent by a newer peer).
            Unknown(u16),
        }

        impl $name {
            /// Every known code, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The stable numeric code.
            pub fn code(self) -> u16 {
                match self {
                    $( $name::$variant => $num, )*
                    $name::Unknown(n) => n,
                }
            }

            /// The variant for a numeric code; unknown numbers are kept as `Unknown`.
            pub fn from_code(code: u16) -> Self {
                match code {
                    $( $num => $name::$variant, )*
                    n => $name::Unknown(n),
                }
            }

            /// A short description for people.
            pub fn describe(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )*
                    $name::Unknown(_) => "unknown code",
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{} ({})", self.describe(), self.code())
            }
        }
    };
}

code_enum! {
    /// Why a session was refused or closed (HELLO_REJECT and CLOSE frames, and local events).
    pub enum SessionCode {
        /// Closed on purpose, nothing wrong.
        Normal = 1000 => "session closed normally",
        /// The peers share no protocol version.
        VersionMismatch = 1001 => "no common protocol version",
        /// The client is not on the allowlist and proved no shared secret.
        Unauthorized = 1002 => "client not authorized (not on the allowlist, no shared secret)",
        /// The client's shared-secret proof is wrong.
        BadSecret = 1003 => "wrong shared secret",
        /// The server has as many peers as its limit allows.
        TooManyPeers = 1004 => "server has too many peers",
        /// The peer sent a malformed or unexpected frame.
        ProtocolViolation = 1005 => "protocol violation",
        /// The peer overran the per-peer budget.
        FlowControl = 1006 => "peer exceeded its flow-control budget",
        /// The handshake did not complete in time (local).
        HandshakeTimeout = 1007 => "handshake timed out",
        /// Nothing was heard from the peer for the idle timeout (local).
        IdleTimeout = 1008 => "peer silent past the idle timeout",
        /// The Tox friend link went down (local).
        LinkLost = 1009 => "Tox link to the peer lost (longer than the resume grace)",
        /// A stream frame came before the handshake.
        HandshakeRequired = 1010 => "stream frame before the handshake",
        /// The endpoint is shutting down.
        Shutdown = 1011 => "endpoint shutting down",
        /// The peer lost the session's state (it restarted); its streams are gone.
        SessionUnknown = 1012 => "peer does not know this session (it restarted)",
        /// Sent in CLOSE by a server that saw the link drop while the client did not: the
        /// client resumes the session (HELLO with its session id). The session goes on.
        ResumeRequired = 1013 => "link was lost; resume the session",
        /// The server's configuration was reloaded and no longer admits this client (its
        /// key was removed, or the secret it proved changed).
        Revoked = 1014 => "the server's configuration no longer admits this client",
    }
}

code_enum! {
    /// Why a stream was refused (OPEN_ERR) or reset (RST), or ended locally.
    pub enum StreamCode {
        /// The application reset the stream, or the local connection that used it ended
        /// abruptly (a client that hung up mid-download).
        Cancelled = 2000 => "stream cancelled: the application hung up or reset it",
        /// The server's rules do not allow this client to reach this target.
        TargetNotAllowed = 2001 => "target not allowed by the server's rules",
        /// The target refused the TCP connection.
        TargetRefused = 2002 => "target refused the connection",
        /// The target could not be reached (no route, name did not resolve).
        TargetUnreachable = 2003 => "target unreachable",
        /// Connecting to the target timed out.
        TargetTimeout = 2004 => "connecting to the target timed out",
        /// The peer has as many streams as its limit allows.
        TooManyStreams = 2005 => "too many streams for this peer",
        /// The peer sent past the stream's credit window.
        FlowControl = 2006 => "stream flow-control window exceeded",
        /// A frame named a stream that does not exist.
        UnknownStream = 2007 => "unknown stream",
        /// A frame broke the stream's state rules (e.g. DATA after FIN, a gap in offsets).
        StreamState = 2008 => "frame not allowed in the stream's state",
        /// No OPEN_OK or OPEN_ERR arrived in time (local).
        OpenTimeout = 2009 => "open timed out",
        /// The stream's session ended; the session's code says why (local).
        SessionClosed = 2010 => "session ended",
        /// The connection to the target failed mid-stream.
        TargetIo = 2011 => "connection to the target failed",
        /// An OPEN reused the ID of a live stream.
        DuplicateStream = 2012 => "stream ID already in use",
        /// The target is not a valid host:port.
        InvalidTarget = 2013 => "invalid target",
        /// The peer asked for a stream but this endpoint does not accept streams.
        NotAccepting = 2014 => "this endpoint accepts no incoming streams",
        /// The server's rules do not allow this client to listen there (reverse
        /// forwarding).
        ListenNotAllowed = 2015 => "listening there is not allowed by the server's rules",
        /// The server could not listen there (the address is in use, or not its own).
        ListenFailed = 2016 => "the server could not listen there",
        /// The peer does not do reverse forwarding (an older server).
        ReverseUnsupported = 2017 => "the peer does not support reverse forwarding",
        /// The client has as many listeners as the server allows.
        TooManyListeners = 2018 => "too many listeners for this client",
        /// The peer does not forward UDP (an older server, or one with it off).
        DatagramUnsupported = 2019 => "the peer does not support UDP forwarding",
        /// The client has as many UDP flows open as the server allows.
        TooManyFlows = 2020 => "too many UDP flows for this client",
        /// The UDP flow carried nothing either way for the idle timeout.
        FlowIdle = 2021 => "UDP flow idle",
    }
}

code_enum! {
    /// The seed's status codes: friend management (1xx), sending (2xx), peer status (3xx)
    /// and the node's own Tox connection (4xx). Transports and the daemon report them.
    pub enum StatusCode {
        /// A friend was added.
        FriendAdded = 101 => "friend added",
        /// Adding a friend failed.
        FriendAddFailed = 102 => "adding friend failed",
        /// The peer is already a friend.
        AlreadyFriend = 103 => "already a friend",
        /// A friend request was sent and waits to be accepted.
        FriendRequestSent = 104 => "friend request sent, waiting for acceptance",
        /// A packet was sent.
        Sent = 201 => "sent",
        /// The target is not a friend.
        NotFriend = 202 => "target is not a friend",
        /// Sending failed.
        SendFailed = 203 => "send failed",
        /// The target is offline.
        TargetOffline = 204 => "target is offline",
        /// The peer came online.
        PeerOnline = 301 => "peer came online",
        /// The peer went offline.
        PeerOffline = 302 => "peer went offline",
        /// This node lost its connection to the Tox network.
        ToxOffline = 401 => "Tox offline",
        /// This node is connected to the Tox network.
        ToxConnected = 402 => "Tox connected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for c in SessionCode::ALL {
            assert_eq!(SessionCode::from_code(c.code()), *c);
            assert!(seen.insert(c.code()));
        }
        for c in StreamCode::ALL {
            assert_eq!(StreamCode::from_code(c.code()), *c);
            assert!(seen.insert(c.code()));
        }
        for c in StatusCode::ALL {
            assert_eq!(StatusCode::from_code(c.code()), *c);
            assert!(seen.insert(c.code()));
        }
        assert_eq!(StreamCode::from_code(9999), StreamCode::Unknown(9999));
        assert_eq!(StreamCode::Unknown(9999).code(), 9999);
    }

    #[test]
    fn seed_codes_are_the_seed_numbers() {
        assert_eq!(StatusCode::FriendAdded.code(), 101);
        assert_eq!(StatusCode::FriendRequestSent.code(), 104);
        assert_eq!(StatusCode::TargetOffline.code(), 204);
        assert_eq!(StatusCode::PeerOnline.code(), 301);
        assert_eq!(StatusCode::ToxConnected.code(), 402);
        assert_eq!(
            StreamCode::TargetNotAllowed.to_string(),
            "target not allowed by the server's rules (2001)"
        );
    }
}
