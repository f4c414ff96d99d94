//! A bounded multi-document YAML reader for untrusted input.
//!
//! [`parse_documents`] limits input size, document count, nesting depth and
//! alias expansion, so a "billion laughs" file fails fast with
//! [`YamlError::AliasExpansion`] instead of exhausting memory. Manifests,
//! kustomizations and kustomize's output are all read through it.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_json::{Map, Value};

use crate::manifest::{MAX_DEPTH, MAX_DOCUMENTS, MAX_FILE_BYTES};

// ---------------------------------------------------------------------------
// Bounded YAML
// ---------------------------------------------------------------------------

/// Limits for [`parse_documents`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YamlLimits {
    /// Largest input in bytes.
    pub max_bytes: usize,
    /// Most documents (`---`) in the stream.
    pub max_documents: usize,
    /// Deepest nesting of sequences/mappings.
    pub max_depth: usize,
    /// Budget for the expanded size of the whole stream: every node costs 1
    /// plus the length of its text, counted *after* aliases are expanded.
    /// Plain YAML costs about its own size; only alias expansion can exceed
    /// it.
    pub max_expanded: usize,
}

impl YamlLimits {
    /// Limits for an input of at most `max_bytes`: expansion may grow the
    /// data to four times the input size.
    pub fn for_size(max_bytes: usize) -> Self {
        YamlLimits {
            max_bytes,
            max_documents: MAX_DOCUMENTS,
            max_depth: MAX_DEPTH,
            max_expanded: max_bytes.saturating_mul(4).saturating_add(64 * 1024),
        }
    }
}

impl Default for YamlLimits {
    /// 1 MiB, 1,000 documents, depth 64, expansion ×4.
    fn default() -> Self {
        YamlLimits::for_size(MAX_FILE_BYTES)
    }
}

/// YAML that is malformed or exceeds a [`YamlLimits`] bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    /// Input too large.
    #[error("YAML is too large ({size} bytes, at most {limit})")]
    TooBig {
        /// Input size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many documents.
    #[error("YAML has more than {limit} documents")]
    TooManyDocuments {
        /// The limit.
        limit: usize,
    },
    /// Nested too deeply.
    #[error("YAML is nested more than {limit} levels deep")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// Aliases expand to too much data ("billion laughs").
    #[error(
        "YAML aliases expand to more than {limit} bytes of data (an alias/anchor bomb?); refused"
    )]
    AliasExpansion {
        /// The limit.
        limit: usize,
    },
    /// Not valid YAML (or not representable as JSON-like data).
    #[error("not valid YAML: {0}")]
    Syntax(String),
}

/// Parses a multi-document YAML stream into JSON values, within `limits`.
/// Empty and `null` documents are skipped. Tags (`!foo`) are dropped and
/// their value kept; non-string mapping keys become strings; duplicate keys
/// are an error. Never panics.
pub fn parse_documents(text: &str, limits: &YamlLimits) -> Result<Vec<Value>, YamlError> {
    if text.len() > limits.max_bytes {
        return Err(YamlError::TooBig {
            size: text.len(),
            limit: limits.max_bytes,
        });
    }
    // libyaml spends time proportional to the flow nesting depth on every
    // token, so `[[[[…` of a megabyte would take many seconds before the
    // exact depth check below ever runs: refuse absurd flow nesting first.
    if flow_nesting_exceeds(text, limits.max_depth.saturating_mul(4)) {
        return Err(YamlError::TooDeep {
            limit: limits.max_depth,
        });
    }
    let parse = || {
        let state = RefCell::new(Budget {
            limits: *limits,
            depth: 0,
            used: 0,
            hit: None,
        });
        let mut out = Vec::new();
        for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
            if index >= limits.max_documents {
                return Err(YamlError::TooManyDocuments {
                    limit: limits.max_documents,
                });
            }
            state.borrow_mut().depth = 0;
            match (Seed { state: &state }).deserialize(document) {
                Ok(Value::Null) => {}
                Ok(value) => out.push(value),
                Err(err) => {
                    if let Some(hit) = state.borrow_mut().hit.take() {
                        return Err(hit);
                    }
                    let message = err.to_string();
                    if message.contains("repetition limit") {
                        return Err(YamlError::AliasExpansion {
                            limit: limits.max_expanded,
                        });
                    }
                    if message.contains("recursion limit") {
                        return Err(YamlError::TooDeep {
                            limit: limits.max_depth,
                        });
                    }
                    return Err(YamlError::Syntax(message));
                }
            }
        }
        Ok(out)
    };
    // yaml_serde should not panic on any input; this is the belt to its
    // braces, so a malformed repository file can never take a worker down.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)).unwrap_or_else(|_| {
        Err(YamlError::Syntax(
            "the YAML parser failed on this input".to_string(),
        ))
    })
}

/// A cheap over-estimate of flow (`[`/`{`) nesting: brackets in quoted
/// strings and comments are skipped; brackets in plain or block scalars
/// count, which is why the caller allows a margin over the real limit.
fn flow_nesting_exceeds(text: &str, limit: usize) -> bool {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut prev = b'\n';
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let after_space = matches!(prev, b' ' | b'\t' | b'\n' | b'\r');
        let token_start = after_space || matches!(prev, b'[' | b'{' | b',' | b':' | b'-');
        match c {
            b'#' if after_space => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                prev = b'\n';
                i += 1;
                continue;
            }
            b'"' if token_start => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\'' if token_start => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
        i += 1;
    }
    false
}

struct Budget {
    limits: YamlLimits,
    depth: usize,
    used: usize,
    hit: Option<YamlError>,
}

#[derive(Clone, Copy)]
struct Seed<'s> {
    state: &'s RefCell<Budget>,
}

impl Seed<'_> {
    fn spend<E: de::Error>(&self, cost: usize) -> Result<(), E> {
        let mut state = self.state.borrow_mut();
        state.used = state.used.saturating_add(cost);
        if state.used > state.limits.max_expanded {
            let err = YamlError::AliasExpansion {
                limit: state.limits.max_expanded,
            };
            let message = err.to_string();
            state.hit = Some(err);
            return Err(E::custom(message));
        }
        Ok(())
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        self.spend(1)?;
        let mut state = self.state.borrow_mut();
        state.depth += 1;
        if state.depth > state.limits.max_depth {
            let err = YamlError::TooDeep {
                limit: state.limits.max_depth,
            };
            let message = err.to_string();
            state.hit = Some(err);
            return Err(E::custom(message));
        }
        Ok(())
    }

    fn leave(&self) {
        let mut state = self.state.borrow_mut();
        state.depth = state.depth.saturating_sub(1);
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.spend(1)?;
        Ok(serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(v.to_string())))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.spend(1 + v.len())?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        self.spend(1 + v.len())?;
        Ok(Value::String(String::from_utf8_lossy(v).into_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.spend(1)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            out.push(item);
        }
        self.leave();
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(self)? {
            let key = match key {
                Value::String(s) => s,
                Value::Null => "null".to_string(),
                other => other.to_string(),
            };
            let value = map.next_value_seed(self)?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            out.insert(key, value);
        }
        self.leave();
        Ok(Value::Object(out))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        // A tagged node (`!tag value`): keep the value, drop the tag.
        let (_tag, variant): (de::IgnoredAny, _) = data.variant()?;
        variant.newtype_variant_seed(self)
    }
}
