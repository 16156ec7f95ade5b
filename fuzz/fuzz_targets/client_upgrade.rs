#![no_main]

//! A client's WebSocket upgrade request, and the logs socket it names.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oauth_consumer_server::fuzzing::client_upgrade(data);
});
