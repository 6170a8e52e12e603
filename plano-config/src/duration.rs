//! Durations in the configuration: how they are written (`RawDuration`), parsed
//! (`parse_duration`) and printed back (`duration_str`, `opt_duration_str`).

use std::time::Duration;

use serde::Deserialize;

/// A duration as written: `30s`, `0.5s`, `500ms`, `5m`, or a bare number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    Text(String),
    Seconds(f64),
}

/// `30s`, `0.5s`, `500ms`, `5m`, `1h`, or a bare number of seconds.
pub(crate) fn parse_duration(raw: &RawDuration) -> Result<Duration, String> {
    let text = match raw {
        RawDuration::Seconds(s) => {
            return Duration::try_from_secs_f64(*s).map_err(|_| format!("`{s}` is not a duration"));
        }
        RawDuration::Text(t) => t.trim(),
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 30s, 0.5s, 500ms, 5m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "`{text}` is not a duration (e.g. 30s, 0.5s, 500ms, 5m)"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` is out of range"))
}

/// Serialises durations as humantime strings (`30s`, `500ms`) for readable snapshots.
pub(crate) mod duration_str {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

pub(crate) mod opt_duration_str {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}
