//! Fuzzes the UPDATE decoder under every session encoding (4-octet AS or not,
//! extended messages or not, eBGP or iBGP), picked by the first byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nonstop_agent::wire::{Message, WireContext};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else { return };
    let ctx = WireContext {
        four_octet_as: flags & 1 != 0,
        extended_messages: flags & 2 != 0,
        ebgp: flags & 4 != 0,
    };
    let Ok(len) = u16::try_from(body.len() + 19) else { return };
    let mut bytes = vec![0xff; 16];
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.push(2);
    bytes.extend_from_slice(body);
    if let Ok((Message::Update(update), _)) = Message::decode(&bytes, &ctx) {
        // A decoded UPDATE encodes again and reads back the same.
        let again = Message::Update(update.clone()).to_bytes(&WireContext { extended_messages: true, ..ctx });
        let (back, _) = Message::decode(&again, &WireContext { extended_messages: true, ..ctx })
            .expect("our own encoding decodes");
        assert_eq!(back, Message::Update(update));
    }
});
