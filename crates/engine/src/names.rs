//! Random ids and Docker-style `adjective_noun` names.

use std::io::Read;

const ADJECTIVES: [&str; 32] = [
    "amber", "brave", "calm", "clever", "cosmic", "crisp", "daring", "eager", "fancy", "gentle",
    "golden", "happy", "hidden", "jolly", "keen", "lively", "lucky", "mellow", "nimble", "polite",
    "quick", "quiet", "rapid", "silent", "sleepy", "snowy", "steady", "sunny", "swift", "tidy",
    "vivid", "witty",
];

const NOUNS: [&str; 32] = [
    "anchor", "harbor", "barge", "beacon", "buoy", "cabin", "canal", "cargo", "compass", "crane",
    "dinghy", "dock", "ferry", "galley", "hull", "jetty", "keel", "lantern", "mast", "mooring",
    "oar", "pier", "pilot", "quay", "raft", "rudder", "sail", "schooner", "skiff", "tide", "wharf",
    "yacht",
];

/// `n` random bytes from the kernel.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let filled = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if filled.is_err() {
        // Never expected on Linux; fall back to time and pid so ids still differ.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ ((std::process::id() as u128) << 64);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
    buf
}

/// A 64-hex-digit container id.
pub fn new_id() -> String {
    random_bytes(32)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random `adjective_noun` name.
pub fn random_name() -> String {
    let r = random_bytes(2);
    format!(
        "{}_{}",
        ADJECTIVES[r[0] as usize % ADJECTIVES.len()],
        NOUNS[r[1] as usize % NOUNS.len()]
    )
}

/// Docker's rule for container names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
