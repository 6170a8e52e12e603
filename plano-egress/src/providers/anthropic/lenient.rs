//! Reading pieces of JSON with the leniency of `serde_json::Value` lookups, without building
//! a tree: a field of the wrong type reads as absent (as `v.get(k).and_then(Value::as_str)`
//! would), a repeated key keeps its last value (as a `Value` map does), unknown keys are
//! skipped, and strings borrow from the input unless they had escapes.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The visit methods of a visitor for a JSON string, each giving `$make(Cow<$de, str>)`:
/// borrowed from the input when it had no escapes, owned otherwise.
macro_rules! strings_are {
    ($de:lifetime, $make:expr) => {
        fn visit_borrowed_str<E: serde::de::Error>(self, v: &$de str) -> Result<Self::Value, E> {
            Ok(($make)(std::borrow::Cow::Borrowed(v)))
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(($make)(std::borrow::Cow::Owned(v)))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(($make)(std::borrow::Cow::Owned(v.to_owned())))
        }
    };
}
pub(super) use strings_are;

/// The visit methods of a lenient visitor for the scalar JSON values it does not want:
/// each yields `$none`.
macro_rules! scalars_are {
    ($none:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($none)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok($none)
        }
    };
}

pub(super) fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Skip>()?.is_some() {}
    Ok(())
}

pub(super) fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<Skip, Skip>()?.is_some() {}
    Ok(())
}

/// A value read and dropped. Unlike `serde::de::IgnoredAny`, which only scans, it is read
/// as a `Value` tree would read it (numbers and string escapes checked), so a text whose
/// tree cannot be built (a number out of `f64` range, a lone surrogate) is refused here
/// too, with the same error.
pub(super) struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    scalars_are!(Skip);
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(Skip)
    }
}

/// The members of an object: `field(i, map)` for a key that is `names[i]` (it must read the
/// value), other members skipped.
pub(super) fn members<'de, A: MapAccess<'de>>(
    mut map: A,
    names: &'static [&'static str],
    mut field: impl FnMut(usize, &mut A) -> Result<(), A::Error>,
) -> Result<(), A::Error> {
    while let Some(key) = map.next_key_seed(Key(names))? {
        match key {
            Some(i) => field(i, &mut map)?,
            None => {
                map.next_value::<Skip>()?;
            }
        }
    }
    Ok(())
}

/// A struct read from an object's members: [`Members::NAMES`] are the members it wants,
/// `member(i, map)` reads the value of `NAMES[i]` (it must read it); others are skipped.
pub(super) trait Members<'de>: Default {
    const NAMES: &'static [&'static str];
    fn member<A: MapAccess<'de>>(&mut self, i: usize, map: &mut A) -> Result<(), A::Error>;
}

/// A value read for an object: `Some` (its members read into `T`) when it is one, `None` for
/// any other value, read and dropped (as lookups in a tree find nothing in a non-object).
pub(super) struct ObjectOr<T>(pub Option<T>);

impl<T: Default> ObjectOr<T> {
    /// `T` from an object, `T::default()` from any other value.
    pub(super) fn or_default(self) -> T {
        self.0.unwrap_or_default()
    }
}

impl<'de, T: Members<'de>> serde::Deserialize<'de> for ObjectOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<fn() -> T>);

impl<'de, T: Members<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = ObjectOr<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    scalars_are!(ObjectOr(None));
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(ObjectOr(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut out = T::default();
        members(map, T::NAMES, |i, map| out.member(i, map))?;
        Ok(ObjectOr(Some(out)))
    }
}

/// What is read from an array's elements (all of them must be read or skipped).
pub(super) trait Elements<'de>: Default {
    fn elements<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error>;
}

/// A value read for an array: `Some` (`T` read from its elements) when it is one, `None`
/// for any other value, read and dropped.
pub(super) struct ArrayOr<T>(pub Option<T>);

impl<T: Default> ArrayOr<T> {
    /// `T` from an array, `T::default()` from any other value.
    pub(super) fn or_default(self) -> T {
        self.0.unwrap_or_default()
    }
}

impl<'de, T: Elements<'de>> serde::Deserialize<'de> for ArrayOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ArrayVisitor(PhantomData))
    }
}

struct ArrayVisitor<T>(PhantomData<fn() -> T>);

impl<'de, T: Elements<'de>> Visitor<'de> for ArrayVisitor<T> {
    type Value = ArrayOr<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    scalars_are!(ArrayOr(None));
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(ArrayOr(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        T::elements(seq).map(|t| ArrayOr(Some(t)))
    }
}

/// A member name, as its index in a list of wanted names (`None`: not wanted).
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|n| *n == v))
    }
}

/// A value read for a string: `Some` when it is one (what `Value::as_str` gives), `None`
/// for any other value.
pub(super) struct Str<'a>(pub Option<Cow<'a, str>>);

impl<'de> serde::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    strings_are!('de, |s| Str(Some(s)));
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Str(None))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Str(None))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Str(None))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Str(None))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Str(None))
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Str(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(Str(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(Str(None))
    }
}

/// A value read for a count: `Some` when it is a non-negative integer (what
/// `Value::as_u64` gives), `None` for any other value.
pub(super) struct Count(pub Option<u64>);

impl<'de> serde::Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

struct CountVisitor;

impl<'de> Visitor<'de> for CountVisitor {
    type Value = Count;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Count(Some(v)))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Count(u64::try_from(v).ok()))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Count(None))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Count(None))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Count(None))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Count(None))
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Count(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip_seq(seq)?;
        Ok(Count(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        skip_map(map)?;
        Ok(Count(None))
    }
}

/// A JSON string, escaped as `serde_json` escapes it.
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    let mut ser = serde_json::Serializer::new(out);
    // Writing into a `Vec` cannot fail.
    let _ = serde::Serializer::serialize_str(&mut ser, s);
}

/// A string as it was read from JSON. A borrowed one had no escape in its JSON text, which
/// then held no quote, backslash or control character (`serde_json` refuses those raw):
/// what `serde_json` would write for it is its bytes between quotes, copied as they are
/// (escaping ~1 KB of answer text byte by byte was ~9k instructions). Others are escaped.
// The `Cow` itself is the argument: whether it is borrowed is what is read.
#[allow(clippy::ptr_arg)]
pub(super) fn write_read_str(out: &mut Vec<u8>, s: &Cow<'_, str>) {
    match s {
        Cow::Borrowed(b) => {
            out.reserve(b.len() + 2);
            out.push(b'"');
            out.extend_from_slice(b.as_bytes());
            out.push(b'"');
        }
        Cow::Owned(o) => write_str(out, o),
    }
}
