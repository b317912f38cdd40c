//! How the agent lets go of a connection the router has closed, under GTSM
//! (RFC 5082). A router's kernel answers a segment for a connection it no
//! longer has with an RST sent at the default TTL, which GTSM makes the
//! agent's kernel drop: a FIN sent there would be sent again for minutes,
//! each time a stray segment at the router (and, at the lab router, a FIN
//! on the agent's address in the middle of an upgrade's capture).

mod support;

use std::time::Duration;

use support::{Agent, Daemon, Link, eventually};

/// A router that takes each connection, reads the OPEN, closes its side
/// (a FIN at TTL 255, which GTSM lets through) and forgets the connection
/// (an RST at TTL 64, which GTSM drops, as the router's kernel would send
/// it), as a router refusing a connection while Idle can. Prints a line per
/// connection.
const REFUSING_ROUTER: &str = r#"
import socket, struct, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
s.bind((sys.argv[1], 179))
s.listen()
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.shutdown(socket.SHUT_WR)
    c.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    print("refused", flush=True)
"#;

/// The agent resets a connection the router closed instead of closing it
/// with a FIN nobody answers: nothing of the refused attempts stays in its
/// kernel, however many there are.
#[test]
fn connections_the_router_closed_leave_nothing_behind_under_gtsm() {
    let link = Link::new("closing-gtsm");
    let router = Daemon::spawn(
        "refusing router",
        link.b.exec(&["python3", "-c", REFUSING_ROUTER, &link.b_v4]),
        link.dir.join("router.log"),
    );
    let config = format!(
        "asn: 65001\nrouterId: {}\npeers:\n- address: {}\n  asn: 65000\n  connectRetryTime: 1\n  \
         ttlSecurity: true\n  families: [ipv4-unicast]\n",
        link.a_v4, link.b_v4
    );
    let agent = Agent::start(&link.a, &link.dir, &config);
    eventually(Duration::from_secs(20), "three connections refused", || {
        let n = router.log_text().matches("refused").count();
        if n >= 3 { Ok(()) } else { Err(format!("{n}: {}", router.log_text())) }
    });
    let peer = agent.peer(&link.b_v4).unwrap();
    assert_ne!(peer["state"], "Established", "{peer}");
    // A FIN sent and never answered keeps its socket in one of these states.
    let out = link
        .a
        .exec(&["ss", "-tnH", "state", "fin-wait-1", "state", "closing", "state", "last-ack"])
        .output()
        .unwrap();
    let lingering = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(lingering.trim().is_empty(), "connections left closing: {lingering}");
}
