//! A key package from an untrusted peer: `Package::decode` must answer every byte string with a
//! package or an error, never a panic; a package it accepts must encode back to the same bytes.
//! Without a sanitizer libFuzzer cannot guess the 7-byte magic, so an odd first byte puts the
//! magic and the format version in front of the rest, to reach the parser behind them.
#![no_main]

use hkms::transport::Package;
use hkms::transport::package::{FORMAT_VERSION, MAGIC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let input = if choice % 2 == 1 {
        [MAGIC.as_slice(), &[FORMAT_VERSION], rest].concat()
    } else {
        rest.to_vec()
    };
    if let Ok(package) = Package::decode(&input) {
        let again = package.encode().expect("an accepted package encodes");
        assert_eq!(again, input, "decode and encode must round-trip");
    }
});
