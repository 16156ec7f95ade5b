#![no_main]

//! The client's address from forwarding headers, and proxy list entries.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oauth_consumer_server::fuzzing::forwarded(data);
});
