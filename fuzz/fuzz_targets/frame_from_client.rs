#![no_main]

//! The relay's reading of a client's (masked) frames.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oauth_consumer_server::fuzzing::relay_frames(true, data);
});
