//! `toxtun-transport-tox` will bind c-toxcore (Debian's `libtoxcore-dev`) and carry the
//! protocol core's packets over real Tox friend links: identity, bootstrap, friend
//! requests, lossless custom packets with send-queue backpressure. It is filled in by the
//! real-Tox transport issue and exports nothing yet; it does not link c-toxcore yet.
