#![no_main]

//! The CSRF double submit: the cookie read from a `Cookie` header, and the
//! form token checked against it.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    oauth_consumer_server::fuzzing::csrf(data);
});
