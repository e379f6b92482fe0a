//! Human durations: `90s`, `15m`, `2h`, `1h30m`, `1d`, `500ms`.

use std::time::Duration;

/// Parse a duration written the way people (and compose files) write them.
///
/// A bare number is seconds. Units: `ms`, `s`, `m`, `h`, `d`, `w`; they may be
/// combined largest first (`1h30m`). Returns a sentence saying what is wrong.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("a duration is empty; write e.g. `30m`, `2h` or `1d`".to_string());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad(text));
        }
        let number: f64 = rest[..digits].parse().map_err(|_| bad(text))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let millis_per_unit: f64 = match unit {
            "ms" => 1.0,
            "s" | "sec" => 1_000.0,
            "m" | "min" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "w" => 604_800_000.0,
            _ => return Err(bad(text)),
        };
        total += Duration::from_millis((number * millis_per_unit).round() as u64);
    }
    Ok(total)
}

/// Write a duration the short way people read it: `1m32s`, `41s`, `2h5m`, `850ms`.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (days, hours, mins, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if days > 0 {
        out.push_str(&format!("{days}d"));
    }
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if mins > 0 && days == 0 {
        out.push_str(&format!("{mins}m"));
    }
    if s > 0 && days == 0 && hours == 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Write a duration exactly, in units [`parse`] reads back to the same
/// value: `5h14m48s`, `1d2h`, `1s500ms`, `0s`. For text that is parsed
/// again (a command's canonical text); [`format`] rounds for people.
pub fn format_exact(d: Duration) -> String {
    let ms = d.as_millis();
    let parts = [
        (ms / 86_400_000, "d"),
        (ms / 3_600_000 % 24, "h"),
        (ms / 60_000 % 60, "m"),
        (ms / 1_000 % 60, "s"),
        (ms % 1_000, "ms"),
    ];
    let out: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if out.is_empty() { "0s".into() } else { out }
}

fn bad(text: &str) -> String {
    format!("`{text}` is not a duration; write e.g. `30s`, `15m`, `2h`, `1h30m` or `1d`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_form_reads_back_to_the_same_duration() {
        // 18888 s once became `5h14m` in a lock command's text (found by
        // the command fuzz target; its input is kept in fuzz/regressions).
        for secs in [0, 1, 59, 60, 18_888, 86_400, 90_061, 1_000_000] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse(&format_exact(d)), Ok(d), "{secs}s");
        }
        let d = Duration::from_millis(1_500);
        assert_eq!(format_exact(d), "1s500ms");
        assert_eq!(parse(&format_exact(d)), Ok(d));
        assert_eq!(format_exact(Duration::from_secs(18_888)), "5h14m48s");
    }

    #[test]
    fn reads_units_and_combinations() {
        assert_eq!(parse("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1_500)));
    }

    #[test]
    fn rejects_nonsense_with_an_example() {
        assert!(parse("soon").unwrap_err().contains("e.g. `30s`"));
        assert!(parse("10x").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn formats_like_a_report() {
        assert_eq!(format(Duration::from_secs(92)), "1m32s");
        assert_eq!(format(Duration::from_secs(41)), "41s");
        assert_eq!(format(Duration::from_millis(850)), "850ms");
        assert_eq!(format(Duration::from_secs(7_500)), "2h5m");
    }
}
