#![no_main]

//! The relay's reading of the API's (unmasked) frames.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oauth_consumer_server::fuzzing::relay_frames(false, data);
});
