#![no_main]

//! The API's answer to the relay's WebSocket upgrade.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oauth_consumer_server::fuzzing::upstream_handshake(data);
});
