//! The access-log line, written by hand.
//!
//! An access event (target [`ACCESS_TARGET`]) is formatted here, byte for byte as
//! tracing-subscriber's own formatters write it (text: `Full` without ANSI; JSON: flattened
//! event, no spans), for a fraction of the instructions: the timestamp's date and time are
//! kept per thread for the current second, numbers go through `itoa`/`ryu` (as `serde_json`
//! does), strings that need no escaping are copied whole, and nothing is painted. Every other
//! event, and every event on a terminal (ANSI colours), goes to tracing-subscriber's
//! formatter. The equivalence is a test (in `plano-edge`'s `access_log.rs`, on the real
//! access event, both formats).

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::ACCESS_TARGET;

/// tracing-subscriber's event formatter `inner`, with access events written by hand.
pub struct AccessFormat<F> {
    pub inner: F,
    pub json: bool,
}

impl<S, N, F> FormatEvent<S, N> for AccessFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.target() != ACCESS_TARGET || (!self.json && writer.has_ansi_escapes()) {
            return self.inner.format_event(ctx, writer, event);
        }
        // Built in a String of this thread, then handed to the layer's buffer in one call:
        // many small writes through the layer's `dyn` writer cost more than the copy. A
        // field that logs while it is formatted finds the String taken and gets its own.
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                self.write_line(&mut line, event)?;
                writer.write_str(&line)
            }
            Err(_) => {
                let mut line = String::new();
                self.write_line(&mut line, event)?;
                writer.write_str(&line)
            }
        })
    }
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<F> AccessFormat<F> {
    fn write_line(&self, w: &mut String, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        if self.json {
            w.push_str("{\"timestamp\":\"");
            write_timestamp(w)?;
            w.push_str("\",\"level\":\"");
            w.push_str(meta.level().as_str());
            w.push('"');
            let mut visitor = JsonFields { w, result: Ok(()) };
            event.record(&mut visitor);
            visitor.result?;
            w.push_str(",\"target\":");
            json_str(w, meta.target())?;
            w.push_str("}\n");
        } else {
            write_timestamp(w)?;
            w.push_str(match *meta.level() {
                Level::TRACE => " TRACE ",
                Level::DEBUG => " DEBUG ",
                Level::INFO => "  INFO ",
                Level::WARN => "  WARN ",
                Level::ERROR => " ERROR ",
            });
            w.push_str(meta.target());
            w.push_str(": ");
            let mut visitor = TextFields {
                w,
                first: true,
                result: Ok(()),
            };
            event.record(&mut visitor);
            visitor.result?;
            w.push('\n');
        }
        Ok(())
    }
}

thread_local! {
    /// The Unix second last formatted on this thread and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// The current time as tracing-subscriber's `SystemTime` writes it
/// (`2026-12-01T16:46:56.123456Z`, UTC, microseconds).
fn write_timestamp(w: &mut String) -> fmt::Result {
    let Ok(since) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(w));
    };
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        match date_time(secs) {
            Some(t) => text = t,
            None => {
                return tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(w));
            }
        }
        SECOND.set((secs, text));
    }
    let mut micros = [b'.', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
    let mut n = since.subsec_micros();
    for d in micros[1..7].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // Both are ASCII by construction.
    w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
    w.write_str(std::str::from_utf8(&micros).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second in years 1970–9999 (else None).
pub(crate) fn date_time(secs: u64) -> Option<[u8; 19]> {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(i64::try_from(days).ok()?);
    if !(1970..=9999).contains(&year) {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00";
    let put = |out: &mut [u8; 19], at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut out, 0, 4, year as u64);
    put(&mut out, 5, 2, month);
    put(&mut out, 8, 2, day);
    put(&mut out, 11, 2, rem / 3600);
    put(&mut out, 14, 2, rem % 3600 / 60);
    put(&mut out, 17, 2, rem % 60);
    Some(out)
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian calendar; the
/// algorithm of Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The fields as tracing-subscriber's `DefaultFields` writes them without ANSI: the message
/// first and bare, then ` name=value` with `Debug` values (strings quoted and escaped).
struct TextFields<'a> {
    w: &'a mut String,
    first: bool,
    result: fmt::Result,
}

impl TextFields<'_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.w.write_char(' ')?;
        }
        self.w.write_str(field.name())?;
        self.w.write_char('=')
    }

    fn field(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| value(self.w));
        }
    }
}

impl Visit for TextFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            if !std::mem::take(&mut self.first) {
                self.result = self.w.write_char(' ');
            }
            self.result = self.result.and_then(|()| write!(self.w, "{value:?}"));
        } else {
            self.field(field, |w| write!(w, "{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.record_debug(field, &format_args!("{value}"));
        }
        // `Debug` of a string: quoted, escaped; a plain one is copied whole.
        if value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            self.field(field, |w| {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            });
        } else {
            self.field(field, |w| write!(w, "{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |w| write_f64_debug(w, value));
    }
}

/// `{value:?}` of an `f64`. From 1e-4 to 1e9 (durations in ms: up to 11 days) `Debug`
/// writes, in plain decimal notation, the shortest digits that read back as `value`, the
/// closest to it when several do; `ryu` writes the same there, for a fraction of the
/// instructions. The two differ only on exact ties (`ryu` rounds them to even, as at
/// 1658206780088562.25), and a double below 1e9 has too many binary fraction digits to sit
/// exactly halfway at 17 digits. Elsewhere `Debug` itself.
fn write_f64_debug(w: &mut String, value: f64) -> fmt::Result {
    if (1e-4..1e9).contains(&value.abs()) {
        w.push_str(ryu::Buffer::new().format_finite(value));
        Ok(())
    } else {
        write!(w, "{value:?}")
    }
}

/// The fields as `serde_json` serialises them in tracing-subscriber's flattened JSON:
/// `,"name":value`, `Debug` values as strings, floats by `ryu` (`null` when not finite).
struct JsonFields<'a> {
    w: &'a mut String,
    result: fmt::Result,
}

impl JsonFields<'_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.w.write_char(',')?;
                json_str(self.w, field.name())?;
                self.w.write_char(':')?;
                value(self.w)
            })();
        }
    }
}

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(JsonEscape(w), "{value:?}")?;
            w.write_char('"')
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| json_str(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |w| {
            if value.is_finite() {
                w.write_str(ryu::Buffer::new().format_finite(value))
            } else {
                w.write_str("null")
            }
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }
}

/// A JSON string, quoted and escaped as `serde_json` does.
pub(crate) fn json_str(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscape(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what is written through it as `serde_json` escapes string contents: `"`, `\`,
/// and control characters below U+0020 (short forms where JSON has them, else `\u00XX`).
struct JsonEscape<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for JsonEscape<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let short = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            // Only ASCII bytes are escaped, so `i` is a character boundary.
            self.0.write_str(&s[start..i])?;
            if short.is_empty() {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let code = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ];
                self.0
                    .write_str(std::str::from_utf8(&code).map_err(|_| fmt::Error)?)?;
            } else {
                self.0.write_str(short)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_of_known_seconds() {
        let at = |s: u64| String::from_utf8(date_time(s).unwrap().to_vec()).unwrap();
        assert_eq!(at(0), "1970-01-01T00:00:00");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(at(951_868_799), "2000-02-29T23:59:59");
        assert_eq!(at(951_868_800), "2000-03-01T00:00:00");
        assert_eq!(at(1_709_164_800), "2024-02-29T00:00:00");
        assert_eq!(at(1_796_137_616), "2026-12-01T15:06:56");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00");
        assert_eq!(at(253_402_300_799), "9999-12-31T23:59:59");
        assert_eq!(date_time(253_402_300_800), None);
    }

    #[test]
    fn floats_are_written_as_debug_writes_them() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.5,
            0.1,
            0.2 + 0.1,
            1e-4,
            9.99e-5,
            1e-5,
            1e15,
            1e16,
            9.999e15,
            123_456.789,
            0.000_296,
            3.81,
            1.0 / 3.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        // Durations as the access log computes them, over nine decades.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let nanos = x % 100_000_000_000_000;
            values.push(std::time::Duration::from_nanos(nanos).as_secs_f64() * 1000.0);
            values.push(f64::from_bits(x));
            // Any double in the range where ryu is used: a random mantissa, exponents from
            // 1e-4 to 1e9.
            let mantissa = f64::from_bits((x & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
            values.push(mantissa * 2f64.powi((x >> 52) as i32 % 44 - 14));
        }
        for v in values {
            let mut ours = String::new();
            write_f64_debug(&mut ours, v).unwrap();
            assert_eq!(ours, format!("{v:?}"), "{}", v.to_bits());
        }
    }

    #[test]
    fn json_strings_are_escaped_as_serde_json_does() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é€\u{2028}🦀\"\\");
        for s in ["", "plain", "a\"b\\c", "line\nbreak\ttab\r", all.as_str()] {
            let mut ours = String::new();
            json_str(&mut ours, s).unwrap();
            assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }
}
