//! The state tool's view of stored bytes: the postcard encodings of the
//! types whose names it knows, decoded to JSON values (`state dump`) and
//! encoded from them (`state bootstrap`).
//!
//! Known type names (as `std::any::type_name` writes them, or short):
//! `bool`, `u8`…`u128`, `usize`, `i8`…`i128`, `isize`, `f32`, `f64`, `char`,
//! `()`, `alloc::string::String` (`String`, `&str`), `alloc::vec::Vec<u8>`
//! and `bytes::bytes::Bytes` (bytes, shown as hex), `alloc::vec::Vec<T>`,
//! `core::option::Option<T>`, tuples `(A, B, …)` of known types, and the
//! bundled WordCount job's `cairn::wordcount::WordCount`. Anything else is
//! shown as hex. A map state's type name is `K => V`.

use anyhow::{Context, anyhow, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use state_core::StateKind;
use state_core::backend_support::{TTL_PREFIX_LEN, unwrap_ttl};
use state_core::typed::MAP_TYPE_SEPARATOR;

/// A type the tool can decode and encode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ty {
    Bool,
    U8,
    U16,
    U32,
    U64,
    U128,
    I8,
    I16,
    I32,
    I64,
    I128,
    F32,
    F64,
    Char,
    Unit,
    String,
    Bytes,
    Option(Box<Ty>),
    Seq(Box<Ty>),
    Tuple(Vec<Ty>),
    /// A struct: postcard encodes its fields in order, like a tuple.
    Struct(Vec<(&'static str, Ty)>),
}

/// The bundled WordCount job's running count (`cli/src/wordcount.rs`).
const WORD_COUNT: &str = "cairn::wordcount::WordCount";

/// Splits `s` at the commas outside brackets.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = s[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}

/// The generic argument of `name` if it is `prefix<…>`.
fn generic<'a>(name: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes.iter().find_map(|p| {
        name.strip_prefix(p)
            .and_then(|rest| rest.strip_prefix('<'))
            .and_then(|rest| rest.strip_suffix('>'))
            .map(str::trim)
    })
}

impl Ty {
    /// The type a type name names, if the tool knows it.
    pub(crate) fn parse(name: &str) -> Option<Ty> {
        let name = name.trim();
        let simple = match name {
            "bool" => Some(Ty::Bool),
            "u8" => Some(Ty::U8),
            "u16" => Some(Ty::U16),
            "u32" => Some(Ty::U32),
            "u64" | "usize" => Some(Ty::U64),
            "u128" => Some(Ty::U128),
            "i8" => Some(Ty::I8),
            "i16" => Some(Ty::I16),
            "i32" => Some(Ty::I32),
            "i64" | "isize" => Some(Ty::I64),
            "i128" => Some(Ty::I128),
            "f32" => Some(Ty::F32),
            "f64" => Some(Ty::F64),
            "char" => Some(Ty::Char),
            "()" => Some(Ty::Unit),
            "alloc::string::String" | "String" | "&str" => Some(Ty::String),
            "bytes::bytes::Bytes" | "bytes" => Some(Ty::Bytes),
            WORD_COUNT => Some(Ty::Struct(vec![
                ("word", Ty::String),
                ("count", Ty::I64),
                ("partition", Ty::U32),
                ("offset", Ty::U64),
            ])),
            _ => None,
        };
        if simple.is_some() {
            return simple;
        }
        if let Some(inner) = generic(name, &["alloc::vec::Vec", "Vec"]) {
            let inner = Ty::parse(inner)?;
            return Some(if inner == Ty::U8 {
                Ty::Bytes
            } else {
                Ty::Seq(Box::new(inner))
            });
        }
        if let Some(inner) = generic(name, &["core::option::Option", "Option"]) {
            return Ty::parse(inner).map(|t| Ty::Option(Box::new(t)));
        }
        let inner = name.strip_prefix('(')?.strip_suffix(')')?;
        split_top_level(inner)
            .into_iter()
            .map(Ty::parse)
            .collect::<Option<Vec<_>>>()
            .map(Ty::Tuple)
    }

    /// Decodes one value from the front of `input`.
    fn take(&self, input: &mut &[u8]) -> anyhow::Result<Value> {
        fn prim<T: DeserializeOwned + Serialize>(input: &mut &[u8]) -> anyhow::Result<Value> {
            let (v, rest) = postcard::take_from_bytes::<T>(input)?;
            *input = rest;
            Ok(serde_json::to_value(v)?)
        }
        Ok(match self {
            Ty::Bool => prim::<bool>(input)?,
            Ty::U8 => prim::<u8>(input)?,
            Ty::U16 => prim::<u16>(input)?,
            Ty::U32 => prim::<u32>(input)?,
            Ty::U64 => prim::<u64>(input)?,
            // JSON numbers do not hold 128 bits: as decimal strings.
            Ty::U128 => {
                let (v, rest) = postcard::take_from_bytes::<u128>(input)?;
                *input = rest;
                Value::String(v.to_string())
            }
            Ty::I8 => prim::<i8>(input)?,
            Ty::I16 => prim::<i16>(input)?,
            Ty::I32 => prim::<i32>(input)?,
            Ty::I64 => prim::<i64>(input)?,
            Ty::I128 => {
                let (v, rest) = postcard::take_from_bytes::<i128>(input)?;
                *input = rest;
                Value::String(v.to_string())
            }
            Ty::F32 => prim::<f32>(input)?,
            Ty::F64 => prim::<f64>(input)?,
            Ty::Char => prim::<char>(input)?,
            Ty::Unit => Value::Null,
            Ty::String => prim::<String>(input)?,
            Ty::Bytes => {
                let (v, rest) = postcard::take_from_bytes::<serde_bytes_vec::ByteBuf>(input)?;
                *input = rest;
                json!({ "hex": hex(&v.0) })
            }
            Ty::Option(inner) => {
                let (tag, rest) = postcard::take_from_bytes::<u8>(input)?;
                *input = rest;
                match tag {
                    0 => Value::Null,
                    1 => inner.take(input)?,
                    other => bail!("option tag {other}"),
                }
            }
            Ty::Seq(inner) => {
                let (len, rest) = postcard::take_from_bytes::<u64>(input)?;
                *input = rest;
                if len > input.len() as u64 && !matches!(**inner, Ty::Unit) {
                    bail!("sequence of {len} elements in {} bytes", input.len());
                }
                (0..len)
                    .map(|_| inner.take(input))
                    .collect::<anyhow::Result<Vec<_>>>()
                    .map(Value::Array)?
            }
            Ty::Tuple(items) => items
                .iter()
                .map(|t| t.take(input))
                .collect::<anyhow::Result<Vec<_>>>()
                .map(Value::Array)?,
            Ty::Struct(fields) => {
                let mut map = Map::new();
                for (name, t) in fields {
                    map.insert((*name).to_owned(), t.take(input)?);
                }
                Value::Object(map)
            }
        })
    }

    /// Decodes `bytes`, which must hold exactly one value.
    pub(crate) fn decode(&self, bytes: &[u8]) -> anyhow::Result<Value> {
        let mut input = bytes;
        let v = self.take(&mut input)?;
        if !input.is_empty() {
            bail!("{} bytes left over", input.len());
        }
        Ok(v)
    }

    /// Appends the encoding of `v` to `out`; the error says what was expected.
    pub(crate) fn encode(&self, v: &Value, out: &mut Vec<u8>) -> anyhow::Result<()> {
        fn put<T: Serialize>(v: T, out: &mut Vec<u8>) -> anyhow::Result<()> {
            let buf = postcard::to_stdvec(&v)?;
            out.extend_from_slice(&buf);
            Ok(())
        }
        fn num<T: TryFrom<i128> + std::str::FromStr>(v: &Value, what: &str) -> anyhow::Result<T> {
            let n: i128 = match v {
                Value::Number(n) => n
                    .as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
                    .ok_or_else(|| anyhow!("expected {what}, found {v}"))?,
                // 128-bit values come as decimal strings (JSON numbers do not hold them).
                Value::String(s) => {
                    return s.parse().map_err(|_| anyhow!("expected {what}, found {v}"));
                }
                _ => bail!("expected {what}, found {v}"),
            };
            T::try_from(n).map_err(|_| anyhow!("{n} does not fit in {what}"))
        }
        match self {
            Ty::Bool => put(
                v.as_bool()
                    .ok_or_else(|| anyhow!("expected a bool, found {v}"))?,
                out,
            ),
            Ty::U8 => put(num::<u8>(v, "u8")?, out),
            Ty::U16 => put(num::<u16>(v, "u16")?, out),
            Ty::U32 => put(num::<u32>(v, "u32")?, out),
            Ty::U64 => put(num::<u64>(v, "u64")?, out),
            Ty::U128 => put(num::<u128>(v, "u128")?, out),
            Ty::I8 => put(num::<i8>(v, "i8")?, out),
            Ty::I16 => put(num::<i16>(v, "i16")?, out),
            Ty::I32 => put(num::<i32>(v, "i32")?, out),
            Ty::I64 => put(num::<i64>(v, "i64")?, out),
            Ty::I128 => put(num::<i128>(v, "i128")?, out),
            Ty::F32 => put(
                v.as_f64()
                    .ok_or_else(|| anyhow!("expected f32, found {v}"))? as f32,
                out,
            ),
            Ty::F64 => put(
                v.as_f64()
                    .ok_or_else(|| anyhow!("expected f64, found {v}"))?,
                out,
            ),
            Ty::Char => {
                let s = v
                    .as_str()
                    .ok_or_else(|| anyhow!("expected a char, found {v}"))?;
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => put(c, out),
                    _ => bail!("expected one char, found {v}"),
                }
            }
            Ty::Unit => Ok(()),
            Ty::String => put(
                v.as_str()
                    .ok_or_else(|| anyhow!("expected a string, found {v}"))?,
                out,
            ),
            Ty::Bytes => {
                let bytes = match v {
                    Value::Object(m) => m
                        .get("hex")
                        .and_then(Value::as_str)
                        .map(unhex)
                        .transpose()?,
                    Value::String(s) => Some(s.as_bytes().to_vec()),
                    _ => None,
                }
                .ok_or_else(|| {
                    anyhow!("expected bytes ({{\"hex\": \"..\"}} or a string), found {v}")
                })?;
                put(serde_bytes_vec::ByteBuf(bytes), out)
            }
            Ty::Option(inner) => {
                if v.is_null() {
                    out.push(0);
                    Ok(())
                } else {
                    out.push(1);
                    inner.encode(v, out)
                }
            }
            Ty::Seq(inner) => {
                let items = v
                    .as_array()
                    .ok_or_else(|| anyhow!("expected an array, found {v}"))?;
                put(items.len() as u64, out)?;
                items.iter().try_for_each(|item| inner.encode(item, out))
            }
            Ty::Tuple(items) => {
                let values = v
                    .as_array()
                    .filter(|a| a.len() == items.len())
                    .ok_or_else(|| {
                        anyhow!("expected an array of {} values, found {v}", items.len())
                    })?;
                items
                    .iter()
                    .zip(values)
                    .try_for_each(|(t, item)| t.encode(item, out))
            }
            Ty::Struct(fields) => match v {
                Value::Object(m) => fields.iter().try_for_each(|(name, t)| {
                    let field = m
                        .get(*name)
                        .ok_or_else(|| anyhow!("field {name:?} missing in {v}"))?;
                    t.encode(field, out)
                        .with_context(|| format!("field {name:?}"))
                }),
                Value::Array(a) if a.len() == fields.len() => fields
                    .iter()
                    .zip(a)
                    .try_for_each(|((_, t), item)| t.encode(item, out)),
                _ => bail!(
                    "expected an object with fields {}, found {v}",
                    field_names(fields)
                ),
            },
        }
    }
}

fn field_names(fields: &[(&str, Ty)]) -> String {
    fields
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The command-line name of a state kind.
pub(crate) fn kind_name(kind: StateKind) -> &'static str {
    match kind {
        StateKind::Value => "value",
        StateKind::List => "list",
        StateKind::Map => "map",
        StateKind::Reducing => "reducing",
        StateKind::Aggregating => "aggregating",
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The bytes of a hex string.
pub(crate) fn unhex(s: &str) -> anyhow::Result<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        bail!("hex {s:?} has an odd number of digits");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| anyhow!("{s:?} is not hex"))
        })
        .collect()
}

/// Shows bytes of unknown type: `{"hex": "…"}`.
pub(crate) fn opaque(bytes: &[u8]) -> Value {
    json!({ "hex": hex(bytes) })
}

/// How a state's stored values read: the types of its values (elements
/// for a list) and of its map user keys, and whether values are TTL-wrapped.
#[derive(Debug, Clone)]
pub(crate) struct ValueView {
    value: Option<Ty>,
    user_key: Option<Ty>,
    ttl: bool,
}

impl ValueView {
    /// The view of a state recorded with `type_name` (`None`: unknown),
    /// of a map state when `map`, with TTL when `ttl`.
    pub(crate) fn new(type_name: Option<&str>, map: bool, ttl: bool) -> Self {
        let (user_key, value) = match type_name {
            Some(t) if map => match t.split_once(MAP_TYPE_SEPARATOR) {
                Some((k, v)) => (Ty::parse(k), Ty::parse(v)),
                None => (None, None),
            },
            Some(t) => (None, Ty::parse(t)),
            None => (None, None),
        };
        ValueView {
            value,
            user_key,
            ttl,
        }
    }

    /// A stored value (list element, map value) as JSON: decoded when its
    /// type is known, else hex; a TTL state's as `{"value": …,
    /// "last_access_millis": …}`.
    pub(crate) fn value(&self, stored: &[u8]) -> Value {
        if self.ttl {
            return match unwrap_ttl(stored) {
                Some((ts, payload)) => json!({
                    "value": decode_or_hex(self.value.as_ref(), payload),
                    "last_access_millis": ts,
                }),
                None => json!({
                    "value": opaque(stored),
                    "error": format!("shorter than its {TTL_PREFIX_LEN}-byte TTL stamp"),
                }),
            };
        }
        decode_or_hex(self.value.as_ref(), stored)
    }

    /// A map user key as JSON.
    pub(crate) fn user_key(&self, bytes: &[u8]) -> Value {
        decode_or_hex(self.user_key.as_ref(), bytes)
    }
}

fn decode_or_hex(ty: Option<&Ty>, bytes: &[u8]) -> Value {
    ty.and_then(|t| t.decode(bytes).ok())
        .unwrap_or_else(|| opaque(bytes))
}

/// A key or namespace as JSON: decoded as `ty` when given, else as a
/// postcard string when it is exactly one, else hex; the empty default
/// namespace is `null`.
pub(crate) fn key_value(ty: Option<&Ty>, bytes: &[u8]) -> Value {
    if let Some(t) = ty {
        return decode_or_hex(Some(t), bytes);
    }
    if bytes.is_empty() {
        return Value::Null;
    }
    match Ty::String.decode(bytes) {
        Ok(v) => v,
        Err(_) => opaque(bytes),
    }
}

/// A byte buffer that serializes as serde bytes (postcard: length and
/// bytes), without a dependency on `serde_bytes`.
mod serde_bytes_vec {
    use serde::de::{Error, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Bytes serialized as one byte string.
    #[derive(Debug)]
    pub(crate) struct ByteBuf(pub(crate) Vec<u8>);

    impl Serialize for ByteBuf {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = ByteBuf;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
            Ok(ByteBuf(v.to_vec()))
        }
        fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<ByteBuf, E> {
            Ok(ByteBuf(v.to_vec()))
        }
    }

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteBuf, D::Error> {
            d.deserialize_bytes(BytesVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_parse() {
        assert_eq!(Ty::parse("alloc::string::String"), Some(Ty::String));
        assert_eq!(Ty::parse("alloc::vec::Vec<u8>"), Some(Ty::Bytes));
        assert_eq!(
            Ty::parse("(alloc::string::String, core::option::Option<i64>)"),
            Some(Ty::Tuple(vec![Ty::String, Ty::Option(Box::new(Ty::I64))]))
        );
        assert_eq!(
            Ty::parse("alloc::vec::Vec<(u32, bool)>"),
            Some(Ty::Seq(Box::new(Ty::Tuple(vec![Ty::U32, Ty::Bool]))))
        );
        assert_eq!(Ty::parse("my_crate::Session"), None);
        assert_eq!(Ty::parse("alloc::vec::Vec<my_crate::Session>"), None);
    }

    #[test]
    fn values_decode_as_postcard_wrote_them_and_encode_back() {
        let wc = Ty::parse(WORD_COUNT).unwrap();
        #[derive(Serialize)]
        struct WordCount {
            word: String,
            count: i64,
            partition: u32,
            offset: u64,
        }
        let bytes = postcard::to_stdvec(&WordCount {
            word: "tea".into(),
            count: -3,
            partition: 1,
            offset: 300,
        })
        .unwrap();
        let v = wc.decode(&bytes).unwrap();
        assert_eq!(
            v,
            json!({"word": "tea", "count": -3, "partition": 1, "offset": 300})
        );
        let mut back = Vec::new();
        wc.encode(&v, &mut back).unwrap();
        assert_eq!(back, bytes);
        let mut from_array = Vec::new();
        wc.encode(&json!(["tea", -3, 1, 300]), &mut from_array)
            .unwrap();
        assert_eq!(from_array, bytes);
        for (ty, value) in [
            ("u64", json!(300)),
            ("i32", json!(-7)),
            ("f64", json!(1.5)),
            ("bool", json!(true)),
            ("alloc::vec::Vec<u8>", json!({"hex": "00ff"})),
            ("core::option::Option<alloc::string::String>", json!(null)),
            ("alloc::vec::Vec<u16>", json!([1, 2, 70000 - 69000])),
            ("u128", json!("340282366920938463463374607431768211455")),
        ] {
            let t = Ty::parse(ty).unwrap();
            let mut buf = Vec::new();
            t.encode(&value, &mut buf).unwrap();
            assert_eq!(t.decode(&buf).unwrap(), value, "{ty}");
        }
        assert!(Ty::U8.encode(&json!(300), &mut Vec::new()).is_err());
        assert!(Ty::U64.decode(&[0x80]).is_err(), "truncated varint");
        assert!(Ty::U8.decode(&[1, 2]).is_err(), "left over");
    }

    #[test]
    fn keys_and_ttl_values_show() {
        let key = postcard::to_stdvec("hello").unwrap();
        assert_eq!(key_value(None, &key), json!("hello"));
        assert_eq!(key_value(None, &[0xff, 1]), json!({"hex": "ff01"}));
        assert_eq!(key_value(None, b""), Value::Null);
        let view = ValueView::new(Some("u64"), false, true);
        let stored = state_core::backend_support::wrap_ttl(5, &postcard::to_stdvec(&9u64).unwrap());
        assert_eq!(
            view.value(&stored),
            json!({"value": 9, "last_access_millis": 5})
        );
        let map = ValueView::new(Some("alloc::string::String => u32"), true, false);
        assert_eq!(map.user_key(&key), json!("hello"));
        assert_eq!(map.value(&[7]), json!(7));
        assert_eq!(unhex("0x00ff").unwrap(), vec![0, 255]);
    }
}
