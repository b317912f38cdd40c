//! Fuzzes framing over a byte stream, as a session reads it: split messages
//! off the front until the bytes run out or an error ends the session.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nonstop_agent::wire::{Message, WireContext, frame};

fuzz_target!(|bytes: &[u8]| {
    let mut data = bytes;
    let ctx = WireContext { four_octet_as: true, extended_messages: true, ebgp: true };
    while let Ok(Some(header)) = frame(data, &ctx) {
        if data.len() < header.len {
            return;
        }
        if Message::decode(&data[..header.len], &ctx).is_err() {
            return;
        }
        data = &data[header.len..];
    }
});
