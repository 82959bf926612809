//! Docker's size units for flags and options (`--memory 64m`, `--log-opt max-size=10m`).

/// Bytes from `512`, `10k`, `64m`, `1.5g`, `2t` (a trailing `b` allowed, binary multiples,
/// any case); `-1` stays -1 (unlimited, where a flag allows it).
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid size: {s:?}"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("invalid size: {s:?}"));
    }
    Ok((n * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn units() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("10k"), Ok(10 << 10));
        assert_eq!(parse_bytes("64MB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(parse_bytes("-1"), Ok(-1));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-5m").is_err());
    }
}
