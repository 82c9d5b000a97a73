//! JSON values built under a memory allowance: a serde seed that charges every node and string it
//! materialises and stops the decoder once the allowance is spent, whatever the input format.
//!
//! Parser budgets count input events; they cannot see that one alias of a large anchored scalar
//! becomes a full copy of that scalar in the value. Charging the value as it is built bounds what
//! decoding one hostile document can allocate, aliases included.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// What one node costs besides its text: the `Value` itself and, for map entries, the tree node
/// and key string header. An estimate on the high side so that the real heap stays below it.
const NODE_BYTES: usize = 64;

/// Bytes a decoder may still materialise. Shared (by reference) across the documents of one
/// release so that the release as a whole is bounded too.
#[derive(Debug)]
pub struct Meter {
    left: Cell<usize>,
    spent_out: Cell<bool>,
}

impl Meter {
    pub fn new(bytes: usize) -> Self {
        Self {
            left: Cell::new(bytes),
            spent_out: Cell::new(false),
        }
    }

    pub fn left(&self) -> usize {
        self.left.get()
    }

    /// Whether a decode stopped because this meter ran out (as opposed to bad syntax).
    pub fn exhausted(&self) -> bool {
        self.spent_out.get()
    }

    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        match self.left.get().checked_sub(bytes) {
            Some(rest) => {
                self.left.set(rest);
                Ok(())
            }
            None => {
                self.left.set(0);
                self.spent_out.set(true);
                Err(E::custom("over the memory budget for one object"))
            }
        }
    }

    /// Moves what `other` spent onto this meter (a document's meter onto its release's).
    pub fn take_spent(&self, allowance: usize, other: &Meter) {
        let spent = allowance.saturating_sub(other.left());
        self.left.set(self.left.get().saturating_sub(spent));
        if other.exhausted() {
            self.spent_out.set(true);
        }
    }
}

/// Deserializes a `serde_json::Value`, charging `meter` for everything it builds.
pub struct Bounded<'m>(pub &'m Meter);

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON-like value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.charge(NODE_BYTES)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.charge(NODE_BYTES)?;
        Ok(v.into())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.charge(NODE_BYTES)?;
        Ok(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.charge(NODE_BYTES)?;
        // Like serde_json: NaN and infinities have no JSON form.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.charge(NODE_BYTES + v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.charge(NODE_BYTES + v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.charge(NODE_BYTES)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.charge(NODE_BYTES)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Bounded(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.charge(NODE_BYTES)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key(self.0))? {
            let value = map.next_value_seed(Bounded(self.0))?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A map key, read as a string the way `serde_json::Value` reads keys.
struct Key<'m>(&'m Meter);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.0.charge(NODE_BYTES + v.len())?;
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.0.charge(NODE_BYTES + v.len())?;
        Ok(v)
    }
}
