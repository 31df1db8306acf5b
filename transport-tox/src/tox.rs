//! A small safe layer over one c-toxcore instance. A [`RawTox`] is used by one thread at a
//! time (it is `Send`, not `Sync`); callbacks only record events into the [`Sink`] passed
//! to [`RawTox::iterate`].

use std::ffi::CString;
use std::os::raw::c_void;
use std::ptr::NonNull;

use bytes::Bytes;
use toxtun_proto::{FriendError, PeerId, ToxId};

use crate::ffi;

/// Why a Tox instance could not be made, or a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToxError {
    /// The identity file is not a Tox save (or is damaged).
    #[error("the identity data is not a valid Tox save (damaged or another format)")]
    BadSavedata,
    /// The identity file is encrypted; toxtun does not handle encrypted saves.
    #[error("the identity data is encrypted; toxtun needs an unencrypted Tox save")]
    EncryptedSavedata,
    /// No UDP port in the range could be bound.
    #[error("could not bind a UDP port in {start}..={end} (in use?)")]
    PortAlloc {
        /// First port tried.
        start: u16,
        /// Last port tried.
        end: u16,
    },
    /// The proxy settings are wrong.
    #[error("proxy: {0}")]
    Proxy(&'static str),
    /// A bootstrap node's host or port is wrong.
    #[error("bootstrap node {host}:{port}: {reason}")]
    Bootstrap {
        /// The node's host.
        host: String,
        /// The node's port.
        port: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// Another failure, with c-toxcore's code.
    #[error("c-toxcore failed: {0}")]
    Other(String),
}

/// Network options of a Tox instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToxOptions {
    /// Use IPv6 (and IPv4) sockets.
    pub ipv6: bool,
    /// Use UDP; without it, only TCP relays.
    pub udp: bool,
    /// Find peers on the local network by broadcast. Tests and the demo turn it off.
    pub local_discovery: bool,
    /// Try to traverse NATs.
    pub hole_punching: bool,
    /// UDP port range to bind (0..=0: c-toxcore's default range, 33445–33545).
    pub start_port: u16,
    /// Last UDP port to try.
    pub end_port: u16,
    /// Run a TCP relay on this port (0: none). A bootstrap node runs one.
    pub tcp_port: u16,
    /// An HTTP or SOCKS5 proxy.
    pub proxy: Option<Proxy>,
}

impl Default for ToxOptions {
    fn default() -> Self {
        ToxOptions {
            ipv6: true,
            udp: true,
            local_discovery: true,
            hole_punching: true,
            start_port: 0,
            end_port: 0,
            tcp_port: 0,
            proxy: None,
        }
    }
}

impl ToxOptions {
    /// Options for tests and the demo: IPv4 on loopback, no LAN discovery, no relay.
    pub fn loopback() -> Self {
        ToxOptions {
            ipv6: false,
            local_discovery: false,
            ..Default::default()
        }
    }
}

/// A proxy for Tox's TCP connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// SOCKS5 (true) or HTTP (false).
    pub socks5: bool,
    /// The proxy's host.
    pub host: String,
    /// The proxy's port.
    pub port: u16,
}

/// What callbacks saw during one `tox_iterate`.
#[derive(Debug)]
pub(crate) enum RawEvent {
    SelfConnection(bool),
    FriendRequest {
        peer: PeerId,
        message: Bytes,
    },
    /// `connected`: any link; `direct`: the link is UDP (not a TCP relay).
    FriendConnection {
        friend: u32,
        connected: bool,
        direct: bool,
    },
    Packet {
        friend: u32,
        data: Bytes,
    },
}

/// Where callbacks put what they saw.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub events: Vec<RawEvent>,
}

/// One c-toxcore instance.
pub(crate) struct RawTox {
    ptr: NonNull<ffi::Tox>,
}

// SAFETY: c-toxcore instances are not thread-safe, but they are not tied to the thread that
// made them either: moving one to another thread, which then has sole use of it, is sound.
// `RawTox` is not `Sync`, and every method takes `&self`/`&mut self`, so two threads can
// never call into the same instance at once.
unsafe impl Send for RawTox {}

impl std::fmt::Debug for RawTox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawTox")
    }
}

/// Frees a `Tox_Options` on every path.
struct OptionsGuard(*mut ffi::Tox_Options);

impl Drop for OptionsGuard {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `tox_options_new` and is freed exactly once, here.
        unsafe { ffi::tox_options_free(self.0) }
    }
}

/// What a `tox_new` error code means.
fn new_error(err: ffi::Tox_Err, opts: &ToxOptions) -> ToxError {
    match err {
        ffi::TOX_ERR_NEW_LOAD_BAD_FORMAT => ToxError::BadSavedata,
        ffi::TOX_ERR_NEW_LOAD_ENCRYPTED => ToxError::EncryptedSavedata,
        ffi::TOX_ERR_NEW_PORT_ALLOC => ToxError::PortAlloc {
            start: opts.start_port,
            end: opts.end_port,
        },
        ffi::TOX_ERR_NEW_PROXY_BAD_TYPE => ToxError::Proxy("bad type"),
        ffi::TOX_ERR_NEW_PROXY_BAD_HOST => ToxError::Proxy("bad host"),
        ffi::TOX_ERR_NEW_PROXY_BAD_PORT => ToxError::Proxy("bad port"),
        ffi::TOX_ERR_NEW_PROXY_NOT_FOUND => ToxError::Proxy("proxy not found"),
        ffi::TOX_ERR_NEW_MALLOC => ToxError::Other("out of memory".into()),
        e => ToxError::Other(format!("tox_new error {e}")),
    }
}

impl RawTox {
    /// Makes an instance, restoring `savedata` (keys, nospam, friends) if given.
    pub fn new(opts: &ToxOptions, savedata: Option<&[u8]>) -> Result<Self, ToxError> {
        let mut err = 0;
        // SAFETY: `tox_options_new` takes a valid out-pointer and returns an owned object or
        // null; the guard frees it whatever happens below.
        let o = unsafe { ffi::tox_options_new(&mut err) };
        if o.is_null() {
            return Err(ToxError::Other("out of memory for options".into()));
        }
        let guard = OptionsGuard(o);
        let proxy_host = match &opts.proxy {
            Some(p) => Some(
                CString::new(p.host.as_str()).map_err(|_| ToxError::Proxy("host contains NUL"))?,
            ),
            None => None,
        };
        // SAFETY: `o` is a live options object; the setters copy plain values. The proxy host
        // and savedata pointers stay valid until `tox_new` returns (they live in this frame),
        // which is all c-toxcore requires of them.
        unsafe {
            ffi::tox_options_set_ipv6_enabled(o, opts.ipv6);
            ffi::tox_options_set_udp_enabled(o, opts.udp);
            ffi::tox_options_set_local_discovery_enabled(o, opts.local_discovery);
            ffi::tox_options_set_hole_punching_enabled(o, opts.hole_punching);
            ffi::tox_options_set_start_port(o, opts.start_port);
            ffi::tox_options_set_end_port(o, opts.end_port);
            ffi::tox_options_set_tcp_port(o, opts.tcp_port);
            if let (Some(p), Some(h)) = (&opts.proxy, &proxy_host) {
                ffi::tox_options_set_proxy_type(
                    o,
                    if p.socks5 {
                        ffi::TOX_PROXY_TYPE_SOCKS5
                    } else {
                        ffi::TOX_PROXY_TYPE_HTTP
                    },
                );
                ffi::tox_options_set_proxy_host(o, h.as_ptr());
                ffi::tox_options_set_proxy_port(o, p.port);
            }
            if let Some(data) = savedata {
                ffi::tox_options_set_savedata_type(o, ffi::TOX_SAVEDATA_TYPE_TOX_SAVE);
                ffi::tox_options_set_savedata_data(o, data.as_ptr(), data.len());
            }
        }
        let mut err = 0;
        // SAFETY: `o` is a live, fully set options object; `err` is a valid out-pointer.
        let ptr = unsafe { ffi::tox_new(o, &mut err) };
        drop(guard);
        // c-toxcore 0.2.18 may return a live instance *and* an error: for savedata it cannot
        // parse it sets LOAD_BAD_FORMAT and starts with a fresh identity. That must never
        // pass as success (the user's identity would silently change), so any error code
        // kills the instance and fails.
        let ptr = match NonNull::new(ptr) {
            Some(p) if err == ffi::TOX_ERR_NEW_OK => Some(p),
            Some(p) => {
                // SAFETY: a live instance we own and never use again.
                unsafe { ffi::tox_kill(p.as_ptr()) };
                None
            }
            None => None,
        };
        let Some(ptr) = ptr else {
            return Err(new_error(err, opts));
        };
        // SAFETY: `ptr` is a live instance; the callbacks are `extern "C"` functions with the
        // exact signatures tox.h declares, and they only touch the `Sink` that `iterate`
        // passes as user data.
        unsafe {
            ffi::tox_callback_self_connection_status(ptr.as_ptr(), on_self_connection);
            ffi::tox_callback_friend_request(ptr.as_ptr(), on_friend_request);
            ffi::tox_callback_friend_connection_status(ptr.as_ptr(), on_friend_connection);
            ffi::tox_callback_friend_lossless_packet(ptr.as_ptr(), on_packet);
            ffi::tox_callback_friend_lossy_packet(ptr.as_ptr(), on_packet);
        }
        Ok(RawTox { ptr })
    }

    fn p(&self) -> *mut ffi::Tox {
        self.ptr.as_ptr()
    }

    /// This node's Tox ID.
    pub fn address(&self) -> ToxId {
        let mut a = [0u8; 38];
        // SAFETY: the buffer holds `tox_address_size()` = 38 bytes, as the header fixes.
        unsafe { ffi::tox_self_get_address(self.p(), a.as_mut_ptr()) };
        // c-toxcore computes the checksum itself, so this cannot fail; keep the key if it did.
        ToxId::from_bytes(&a).unwrap_or_else(|_| {
            let mut pk = [0u8; 32];
            pk.copy_from_slice(&a[..32]);
            ToxId::new(PeerId(pk), [a[32], a[33], a[34], a[35]])
        })
    }

    /// The DHT key others bootstrap from (differs from the long-term public key).
    pub fn dht_id(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        // SAFETY: the buffer holds `tox_public_key_size()` = 32 bytes.
        unsafe { ffi::tox_self_get_dht_id(self.p(), k.as_mut_ptr()) };
        k
    }

    /// The bound UDP port, if UDP is on.
    pub fn udp_port(&self) -> Option<u16> {
        let mut err = 0;
        // SAFETY: live instance, valid out-pointer.
        let port = unsafe { ffi::tox_self_get_udp_port(self.p(), &mut err) };
        (err == ffi::TOX_ERR_GET_PORT_OK).then_some(port)
    }

    /// The TCP relay port, if a relay runs.
    pub fn tcp_port(&self) -> Option<u16> {
        let mut err = 0;
        // SAFETY: live instance, valid out-pointer.
        let port = unsafe { ffi::tox_self_get_tcp_port(self.p(), &mut err) };
        (err == ffi::TOX_ERR_GET_PORT_OK).then_some(port)
    }

    /// Keys, nospam and friends, for saving.
    pub fn savedata(&self) -> Vec<u8> {
        // SAFETY: the buffer is exactly as long as `tox_get_savedata_size` says, and the
        // instance is not touched by anyone else between the two calls (`&self`, not Sync).
        unsafe {
            let n = ffi::tox_get_savedata_size(self.p());
            let mut v = vec![0u8; n];
            ffi::tox_get_savedata(self.p(), v.as_mut_ptr());
            v
        }
    }

    /// Adds a bootstrap node: a DHT node to join through, and a TCP relay on the same port.
    pub fn bootstrap(&mut self, host: &str, port: u16, key: &[u8; 32]) -> Result<(), ToxError> {
        let bad = |reason| ToxError::Bootstrap {
            host: host.to_string(),
            port,
            reason,
        };
        let h = CString::new(host).map_err(|_| bad("host contains NUL"))?;
        let mut err = 0;
        // SAFETY: `h` is NUL-terminated and lives across the call; `key` is 32 bytes.
        let ok = unsafe { ffi::tox_bootstrap(self.p(), h.as_ptr(), port, key.as_ptr(), &mut err) };
        if !ok {
            return Err(bad(match err {
                ffi::TOX_ERR_BOOTSTRAP_BAD_HOST => "host did not resolve",
                ffi::TOX_ERR_BOOTSTRAP_BAD_PORT => "bad port",
                _ => "rejected",
            }));
        }
        let mut err = 0;
        // SAFETY: as above. A node that runs no relay simply never answers on TCP.
        unsafe { ffi::tox_add_tcp_relay(self.p(), h.as_ptr(), port, key.as_ptr(), &mut err) };
        Ok(())
    }

    /// Runs c-toxcore's event loop once; callbacks record into `sink`.
    pub fn iterate(&mut self, sink: &mut Sink) {
        // SAFETY: `sink` outlives the call, and the callbacks cast the user data back to
        // `Sink`, its true type; nothing else receives this pointer.
        unsafe { ffi::tox_iterate(self.p(), (sink as *mut Sink).cast::<c_void>()) };
    }

    /// How long c-toxcore wants to wait before the next `iterate`, in milliseconds.
    pub fn iteration_interval(&self) -> u32 {
        // SAFETY: live instance.
        unsafe { ffi::tox_iteration_interval(self.p()) }
    }

    /// Sends a friend request; returns the friend number.
    pub fn friend_add(&mut self, id: &ToxId, message: &[u8]) -> Result<u32, FriendError> {
        let addr = id.to_bytes();
        let mut err = 0;
        // SAFETY: `addr` is 38 bytes; `message` is valid for its length.
        let n = unsafe {
            ffi::tox_friend_add(
                self.p(),
                addr.as_ptr(),
                message.as_ptr(),
                message.len(),
                &mut err,
            )
        };
        friend_add_result(n, err)
    }

    /// Adds a friend without a request; returns the friend number.
    pub fn friend_add_norequest(&mut self, peer: &PeerId) -> Result<u32, FriendError> {
        let mut err = 0;
        // SAFETY: the key is 32 bytes.
        let n = unsafe { ffi::tox_friend_add_norequest(self.p(), peer.0.as_ptr(), &mut err) };
        friend_add_result(n, err)
    }

    /// Deletes a friend.
    pub fn friend_delete(&mut self, friend: u32) -> bool {
        let mut err = 0;
        // SAFETY: live instance; an unknown number is reported through `err`.
        unsafe { ffi::tox_friend_delete(self.p(), friend, &mut err) }
    }

    /// Every friend with its number.
    pub fn friends(&self) -> Vec<(u32, PeerId)> {
        // SAFETY: the list buffer has the size c-toxcore reports; keys are 32 bytes.
        unsafe {
            let n = ffi::tox_self_get_friend_list_size(self.p());
            let mut list = vec![0u32; n];
            ffi::tox_self_get_friend_list(self.p(), list.as_mut_ptr());
            list.into_iter()
                .filter_map(|f| {
                    let mut pk = [0u8; 32];
                    let mut err = 0;
                    ffi::tox_friend_get_public_key(self.p(), f, pk.as_mut_ptr(), &mut err)
                        .then_some((f, PeerId(pk)))
                })
                .collect()
        }
    }

    /// Whether a friend's link is up, and whether it is direct UDP.
    pub fn friend_connection(&self, friend: u32) -> (bool, bool) {
        let mut err = 0;
        // SAFETY: live instance; an unknown number is reported through `err`.
        let c = unsafe { ffi::tox_friend_get_connection_status(self.p(), friend, &mut err) };
        (c != ffi::TOX_CONNECTION_NONE, c == ffi::TOX_CONNECTION_UDP)
    }

    /// Sends a lossy custom packet (first byte 192..=254); `Err` carries c-toxcore's code.
    pub fn send_lossy(&mut self, friend: u32, data: &[u8]) -> Result<(), ffi::Tox_Err> {
        let mut err = 0;
        // SAFETY: `data` is valid for its length; c-toxcore copies it before returning.
        let ok = unsafe {
            ffi::tox_friend_send_lossy_packet(self.p(), friend, data.as_ptr(), data.len(), &mut err)
        };
        if ok {
            Ok(())
        } else {
            Err(err)
        }
    }

    /// Sends a lossless custom packet; `Err` carries c-toxcore's code.
    pub fn send_lossless(&mut self, friend: u32, data: &[u8]) -> Result<(), ffi::Tox_Err> {
        let mut err = 0;
        // SAFETY: `data` is valid for its length; c-toxcore copies it before returning.
        let ok = unsafe {
            ffi::tox_friend_send_lossless_packet(
                self.p(),
                friend,
                data.as_ptr(),
                data.len(),
                &mut err,
            )
        };
        if ok {
            Ok(())
        } else {
            Err(err)
        }
    }
}

impl Drop for RawTox {
    fn drop(&mut self) {
        // SAFETY: the instance is live and killed exactly once.
        unsafe { ffi::tox_kill(self.ptr.as_ptr()) }
    }
}

fn friend_add_result(n: u32, err: ffi::Tox_Err) -> Result<u32, FriendError> {
    match err {
        ffi::TOX_ERR_FRIEND_ADD_OK => Ok(n),
        ffi::TOX_ERR_FRIEND_ADD_ALREADY_SENT => Err(FriendError::AlreadyFriend),
        ffi::TOX_ERR_FRIEND_ADD_OWN_KEY => Err(FriendError::OwnKey),
        ffi::TOX_ERR_FRIEND_ADD_TOO_LONG | ffi::TOX_ERR_FRIEND_ADD_NO_MESSAGE => {
            Err(FriendError::Message { max: 1016 })
        }
        ffi::TOX_ERR_FRIEND_ADD_BAD_CHECKSUM => Err(FriendError::Failed("bad checksum".into())),
        ffi::TOX_ERR_FRIEND_ADD_SET_NEW_NOSPAM => Err(FriendError::Failed(
            "already a friend with another nospam".into(),
        )),
        e => Err(FriendError::Failed(format!("tox_friend_add error {e}"))),
    }
}

/// # Safety
/// Called by c-toxcore inside `tox_iterate`, whose user data is a `*mut Sink`.
extern "C" fn on_self_connection(_: *mut ffi::Tox, status: ffi::Tox_Connection, user: *mut c_void) {
    // SAFETY: `iterate` passes a live `Sink` as user data, used by no one else meanwhile.
    let sink = unsafe { &mut *user.cast::<Sink>() };
    sink.events
        .push(RawEvent::SelfConnection(status != ffi::TOX_CONNECTION_NONE));
}

extern "C" fn on_friend_request(
    _: *mut ffi::Tox,
    pk: *const u8,
    msg: *const u8,
    len: usize,
    user: *mut c_void,
) {
    // SAFETY: as above; `pk` points to 32 bytes and `msg` to `len` bytes, valid for the
    // duration of the callback, which is when they are copied.
    let (sink, peer, message) = unsafe {
        let mut k = [0u8; 32];
        k.copy_from_slice(std::slice::from_raw_parts(pk, 32));
        let m = if msg.is_null() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(std::slice::from_raw_parts(msg, len))
        };
        (&mut *user.cast::<Sink>(), PeerId(k), m)
    };
    sink.events.push(RawEvent::FriendRequest { peer, message });
}

extern "C" fn on_friend_connection(
    _: *mut ffi::Tox,
    friend: u32,
    status: ffi::Tox_Connection,
    user: *mut c_void,
) {
    // SAFETY: as above.
    let sink = unsafe { &mut *user.cast::<Sink>() };
    sink.events.push(RawEvent::FriendConnection {
        friend,
        connected: status != ffi::TOX_CONNECTION_NONE,
        direct: status == ffi::TOX_CONNECTION_UDP,
    });
}

/// Both custom packet kinds: the first byte tells lossless from lossy.
extern "C" fn on_packet(
    _: *mut ffi::Tox,
    friend: u32,
    data: *const u8,
    len: usize,
    user: *mut c_void,
) {
    // SAFETY: as above; `data` points to `len` bytes valid during the callback.
    let (sink, data) = unsafe {
        (
            &mut *user.cast::<Sink>(),
            Bytes::copy_from_slice(std::slice::from_raw_parts(data, len)),
        )
    };
    sink.events.push(RawEvent::Packet { friend, data });
}
