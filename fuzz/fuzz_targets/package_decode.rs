//! A key package from an untrusted peer: `Package::decode` must answer every byte string with a
//! package or an error, never a panic; a package it accepts must encode back to the same bytes.
#![no_main]

use hkms::transport::Package;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(package) = Package::decode(data) {
        let again = package.encode().expect("an accepted package encodes");
        assert_eq!(again, data, "decode and encode must round-trip");
    }
});
