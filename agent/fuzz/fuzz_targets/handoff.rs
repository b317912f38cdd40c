//! Fuzzes what a successor reads from its predecessor: every handoff message,
//! the session state in SESSIONS and the routing state in RIB parts. Garbage
//! must be refused with an error, never panic, and whatever decodes must
//! encode back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nonstop_agent::handoff::protocol::Message;
use nonstop_agent::handoff::{rib_state, session_state};
use nonstop_agent::rib::{AdjRibIn, AdjRibOut};

fuzz_target!(|packet: &[u8]| {
    let Ok(message) = Message::decode(packet) else { return };
    let again = Message::decode(&message.encode()).expect("our own encoding decodes");
    assert_eq!(again, message);
    match &message {
        Message::Sessions(sessions) => {
            for s in sessions {
                let _ = session_state::thaw(s);
            }
        }
        Message::Rib { part, updates, .. } if part.is_updates() => {
            let (mut rib_in, mut sent) = (AdjRibIn::default(), AdjRibOut::default());
            if rib_state::apply(&mut rib_in, &mut sent, *part, updates).is_ok() {
                // What was taken in can be handed on again (the next handoff).
                let out = rib_state::encode_in(&rib_in);
                let mut back = AdjRibIn::default();
                for (part, bytes) in &out {
                    rib_state::restore_in(&mut back, *part, bytes)
                        .expect("what we restored encodes for the next successor");
                }
                assert_eq!(back.len(), rib_in.len());
            }
        }
        _ => {}
    }
});
