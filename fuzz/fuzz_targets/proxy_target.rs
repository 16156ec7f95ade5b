#![no_main]

//! The proxy's path guard and target builder.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oauth_consumer_server::fuzzing::proxy_target(data);
});
