//! Fuzzes the notification decoder: arbitrary bodies behind a valid header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nonstop_agent::wire::{Message, WireContext};

fuzz_target!(|body: &[u8]| {
    let Ok(len) = u16::try_from(body.len() + 19) else { return };
    let mut bytes = vec![0xff; 16];
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.push(3);
    bytes.extend_from_slice(body);
    if let Ok((message, _)) = Message::decode(&bytes, &WireContext::BEFORE_OPEN) {
        // What decodes must encode again without panicking.
        let _ = message.to_bytes(&WireContext::BEFORE_OPEN);
    }
});
