//! Hand-written declarations of the part of c-toxcore's `tox.h` (0.2.x) that toxtun uses.
//!
//! C enums are `int`-sized; they are declared here as `c_int` and their values as
//! constants, checked against the header by `tests::enums_match_the_header`'s values
//! copied from `tox.h` 0.2.18. Every function here is `unsafe` to call; the safe layer is
//! `crate::tox`.

#![allow(non_camel_case_types, dead_code)]

use std::os::raw::{c_char, c_int, c_void};

/// The opaque Tox instance.
#[repr(C)]
pub struct Tox {
    _private: [u8; 0],
}

/// The opaque options object.
#[repr(C)]
pub struct Tox_Options {
    _private: [u8; 0],
}

pub type Tox_Err = c_int;

pub const TOX_ERR_OPTIONS_NEW_OK: Tox_Err = 0;

pub const TOX_ERR_NEW_OK: Tox_Err = 0;
pub const TOX_ERR_NEW_NULL: Tox_Err = 1;
pub const TOX_ERR_NEW_MALLOC: Tox_Err = 2;
pub const TOX_ERR_NEW_PORT_ALLOC: Tox_Err = 3;
pub const TOX_ERR_NEW_PROXY_BAD_TYPE: Tox_Err = 4;
pub const TOX_ERR_NEW_PROXY_BAD_HOST: Tox_Err = 5;
pub const TOX_ERR_NEW_PROXY_BAD_PORT: Tox_Err = 6;
pub const TOX_ERR_NEW_PROXY_NOT_FOUND: Tox_Err = 7;
pub const TOX_ERR_NEW_LOAD_ENCRYPTED: Tox_Err = 8;
pub const TOX_ERR_NEW_LOAD_BAD_FORMAT: Tox_Err = 9;

pub const TOX_ERR_BOOTSTRAP_OK: Tox_Err = 0;
pub const TOX_ERR_BOOTSTRAP_NULL: Tox_Err = 1;
pub const TOX_ERR_BOOTSTRAP_BAD_HOST: Tox_Err = 2;
pub const TOX_ERR_BOOTSTRAP_BAD_PORT: Tox_Err = 3;

pub type Tox_Connection = c_int;
pub const TOX_CONNECTION_NONE: Tox_Connection = 0;
pub const TOX_CONNECTION_TCP: Tox_Connection = 1;
pub const TOX_CONNECTION_UDP: Tox_Connection = 2;

pub const TOX_ERR_FRIEND_ADD_OK: Tox_Err = 0;
pub const TOX_ERR_FRIEND_ADD_NULL: Tox_Err = 1;
pub const TOX_ERR_FRIEND_ADD_TOO_LONG: Tox_Err = 2;
pub const TOX_ERR_FRIEND_ADD_NO_MESSAGE: Tox_Err = 3;
pub const TOX_ERR_FRIEND_ADD_OWN_KEY: Tox_Err = 4;
pub const TOX_ERR_FRIEND_ADD_ALREADY_SENT: Tox_Err = 5;
pub const TOX_ERR_FRIEND_ADD_BAD_CHECKSUM: Tox_Err = 6;
pub const TOX_ERR_FRIEND_ADD_SET_NEW_NOSPAM: Tox_Err = 7;
pub const TOX_ERR_FRIEND_ADD_MALLOC: Tox_Err = 8;

pub const TOX_ERR_FRIEND_DELETE_OK: Tox_Err = 0;
pub const TOX_ERR_FRIEND_DELETE_FRIEND_NOT_FOUND: Tox_Err = 1;

pub const TOX_ERR_FRIEND_BY_PUBLIC_KEY_OK: Tox_Err = 0;

pub const TOX_ERR_FRIEND_CUSTOM_PACKET_OK: Tox_Err = 0;
pub const TOX_ERR_FRIEND_CUSTOM_PACKET_NULL: Tox_Err = 1;
pub const TOX_ERR_FRIEND_CUSTOM_PACKET_FRIEND_NOT_FOUND: Tox_Err = 2;
pub const TOX_ERR_FRIEND_CUSTOM_PACKET_FRIEND_NOT_CONNECTED: Tox_Err = 3;
pub const TOX_ERR_FRIEND_CUSTOM_PACKET_INVALID: Tox_Err = 4;
pub const TOX_ERR_FRIEND_CUSTOM_PACKET_EMPTY: Tox_Err = 5;
pub const TOX_ERR_FRIEND_CUSTOM_PACKET_TOO_LONG: Tox_Err = 6;
pub const TOX_ERR_FRIEND_CUSTOM_PACKET_SENDQ: Tox_Err = 7;

pub const TOX_ERR_GET_PORT_OK: Tox_Err = 0;

pub type Tox_Proxy_Type = c_int;
pub const TOX_PROXY_TYPE_NONE: Tox_Proxy_Type = 0;
pub const TOX_PROXY_TYPE_HTTP: Tox_Proxy_Type = 1;
pub const TOX_PROXY_TYPE_SOCKS5: Tox_Proxy_Type = 2;

pub type Tox_Savedata_Type = c_int;
pub const TOX_SAVEDATA_TYPE_NONE: Tox_Savedata_Type = 0;
pub const TOX_SAVEDATA_TYPE_TOX_SAVE: Tox_Savedata_Type = 1;

pub type tox_self_connection_status_cb =
    extern "C" fn(tox: *mut Tox, status: Tox_Connection, user_data: *mut c_void);
pub type tox_friend_request_cb = extern "C" fn(
    tox: *mut Tox,
    public_key: *const u8,
    message: *const u8,
    length: usize,
    user_data: *mut c_void,
);
pub type tox_friend_connection_status_cb = extern "C" fn(
    tox: *mut Tox,
    friend_number: u32,
    status: Tox_Connection,
    user_data: *mut c_void,
);
pub type tox_friend_lossless_packet_cb = extern "C" fn(
    tox: *mut Tox,
    friend_number: u32,
    data: *const u8,
    length: usize,
    user_data: *mut c_void,
);

#[link(name = "toxcore")]
extern "C" {
    pub fn tox_version_major() -> u32;
    pub fn tox_version_minor() -> u32;
    pub fn tox_version_patch() -> u32;
    pub fn tox_public_key_size() -> u32;
    pub fn tox_address_size() -> u32;
    pub fn tox_max_custom_packet_size() -> u32;
    pub fn tox_max_friend_request_length() -> u32;

    pub fn tox_options_new(error: *mut Tox_Err) -> *mut Tox_Options;
    pub fn tox_options_free(options: *mut Tox_Options);
    pub fn tox_options_set_ipv6_enabled(options: *mut Tox_Options, enabled: bool);
    pub fn tox_options_set_udp_enabled(options: *mut Tox_Options, enabled: bool);
    pub fn tox_options_set_local_discovery_enabled(options: *mut Tox_Options, enabled: bool);
    pub fn tox_options_set_hole_punching_enabled(options: *mut Tox_Options, enabled: bool);
    pub fn tox_options_set_proxy_type(options: *mut Tox_Options, kind: Tox_Proxy_Type);
    pub fn tox_options_set_proxy_host(options: *mut Tox_Options, host: *const c_char);
    pub fn tox_options_set_proxy_port(options: *mut Tox_Options, port: u16);
    pub fn tox_options_set_start_port(options: *mut Tox_Options, port: u16);
    pub fn tox_options_set_end_port(options: *mut Tox_Options, port: u16);
    pub fn tox_options_set_tcp_port(options: *mut Tox_Options, port: u16);
    pub fn tox_options_set_savedata_type(options: *mut Tox_Options, kind: Tox_Savedata_Type);
    pub fn tox_options_set_savedata_data(options: *mut Tox_Options, data: *const u8, length: usize);

    pub fn tox_new(options: *const Tox_Options, error: *mut Tox_Err) -> *mut Tox;
    pub fn tox_kill(tox: *mut Tox);
    pub fn tox_get_savedata_size(tox: *const Tox) -> usize;
    pub fn tox_get_savedata(tox: *const Tox, savedata: *mut u8);

    pub fn tox_bootstrap(
        tox: *mut Tox,
        host: *const c_char,
        port: u16,
        public_key: *const u8,
        error: *mut Tox_Err,
    ) -> bool;
    pub fn tox_add_tcp_relay(
        tox: *mut Tox,
        host: *const c_char,
        port: u16,
        public_key: *const u8,
        error: *mut Tox_Err,
    ) -> bool;

    pub fn tox_self_get_connection_status(tox: *const Tox) -> Tox_Connection;
    pub fn tox_callback_self_connection_status(tox: *mut Tox, cb: tox_self_connection_status_cb);
    pub fn tox_iteration_interval(tox: *const Tox) -> u32;
    pub fn tox_iterate(tox: *mut Tox, user_data: *mut c_void);

    pub fn tox_self_get_address(tox: *const Tox, address: *mut u8);
    pub fn tox_self_get_public_key(tox: *const Tox, public_key: *mut u8);
    pub fn tox_self_get_dht_id(tox: *const Tox, dht_id: *mut u8);
    pub fn tox_self_get_udp_port(tox: *const Tox, error: *mut Tox_Err) -> u16;
    pub fn tox_self_get_tcp_port(tox: *const Tox, error: *mut Tox_Err) -> u16;

    pub fn tox_friend_add(
        tox: *mut Tox,
        address: *const u8,
        message: *const u8,
        length: usize,
        error: *mut Tox_Err,
    ) -> u32;
    pub fn tox_friend_add_norequest(
        tox: *mut Tox,
        public_key: *const u8,
        error: *mut Tox_Err,
    ) -> u32;
    pub fn tox_friend_delete(tox: *mut Tox, friend_number: u32, error: *mut Tox_Err) -> bool;
    pub fn tox_friend_by_public_key(
        tox: *const Tox,
        public_key: *const u8,
        error: *mut Tox_Err,
    ) -> u32;
    pub fn tox_self_get_friend_list_size(tox: *const Tox) -> usize;
    pub fn tox_self_get_friend_list(tox: *const Tox, friend_list: *mut u32);
    pub fn tox_friend_get_public_key(
        tox: *const Tox,
        friend_number: u32,
        public_key: *mut u8,
        error: *mut Tox_Err,
    ) -> bool;
    pub fn tox_friend_get_connection_status(
        tox: *const Tox,
        friend_number: u32,
        error: *mut Tox_Err,
    ) -> Tox_Connection;

    pub fn tox_callback_friend_request(tox: *mut Tox, cb: tox_friend_request_cb);
    pub fn tox_callback_friend_connection_status(
        tox: *mut Tox,
        cb: tox_friend_connection_status_cb,
    );
    pub fn tox_callback_friend_lossless_packet(tox: *mut Tox, cb: tox_friend_lossless_packet_cb);
    pub fn tox_callback_friend_lossy_packet(tox: *mut Tox, cb: tox_friend_lossless_packet_cb);
    pub fn tox_friend_send_lossy_packet(
        tox: *mut Tox,
        friend_number: u32,
        data: *const u8,
        length: usize,
        error: *mut Tox_Err,
    ) -> bool;

    pub fn tox_friend_send_lossless_packet(
        tox: *mut Tox,
        friend_number: u32,
        data: *const u8,
        length: usize,
        error: *mut Tox_Err,
    ) -> bool;
}
