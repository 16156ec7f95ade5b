#![no_main]

//! The OAuth signature base string of a query and a form body.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oauth_consumer_server::fuzzing::oauth_base_string(data);
});
