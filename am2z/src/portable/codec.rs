//! JSON codecs for the values that cross between steps, keyed by type and registered where
//! the type is concrete (a `#[processor]` leaf, or the caller who compiles the root).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Json;
use crate::Error;

type Encode = dyn Fn(&(dyn Any + Send), &Codecs) -> Result<Json, Error> + Send + Sync;
type Decode = dyn Fn(Json, &Codecs) -> Result<Box<dyn Any + Send>, Error> + Send + Sync;

/// The JSON form of one type, behind `Any`.
#[derive(Clone)]
pub(crate) struct Codec {
    encode: Arc<Encode>,
    decode: Arc<Decode>,
    /// The types whose codecs this one is built from (a tuple's elements).
    parts: Vec<(TypeId, &'static str)>,
}

impl Codec {
    /// The serde codec of `T`.
    pub(crate) fn serde<T: Serialize + DeserializeOwned + Send + 'static>() -> Self {
        Codec {
            encode: Arc::new(|value, _| match value.downcast_ref::<T>() {
                Some(value) => encode(value),
                None => Err(mismatch::<T>()),
            }),
            decode: Arc::new(|json, _| {
                let value: T = decode(json)?;
                Ok(Box::new(value))
            }),
            parts: Vec::new(),
        }
    }

    /// A JSON-array codec for the tuple `T`, built from its elements' codecs (looked up when
    /// used, so the elements may be registered later, by the steps that produce them).
    pub(crate) fn tuple<T: Send + 'static>(
        parts: Vec<(TypeId, &'static str)>,
        encode: fn(&T, &Codecs) -> Result<Vec<Json>, Error>,
        decode: fn(Vec<Json>, &Codecs) -> Result<T, Error>,
    ) -> Self {
        let arity = parts.len();
        Codec {
            encode: Arc::new(move |value, codecs| match value.downcast_ref::<T>() {
                Some(value) => Ok(Json::Array(encode(value, codecs)?)),
                None => Err(mismatch::<T>()),
            }),
            decode: Arc::new(move |json, codecs| match json {
                Json::Array(items) if items.len() == arity => Ok(Box::new(decode(items, codecs)?)),
                other => Err(Error::Serialization {
                    message: format!(
                        "decoding `{}`: expected an array of {arity}, got {other}",
                        std::any::type_name::<T>()
                    ),
                }),
            }),
            parts,
        }
    }
}

/// Every codec a graph's nodes may use, by the type they encode.
#[derive(Clone, Default)]
pub struct Codecs {
    by_type: HashMap<TypeId, Codec>,
}

impl Codecs {
    /// Registers `codec` for `T` (once: the first registration is kept, so a serde codec from
    /// a leaf or the caller wins over a composite one).
    pub(crate) fn register<T: 'static>(&mut self, codec: impl FnOnce() -> Codec) {
        self.by_type.entry(TypeId::of::<T>()).or_insert_with(codec);
    }

    /// The first type among `needs` (and, transitively, their parts) without a codec.
    pub(crate) fn missing(&self, needs: &[(TypeId, &'static str)]) -> Option<&'static str> {
        let mut pending = needs.to_vec();
        let mut seen = std::collections::HashSet::new();
        while let Some((ty, name)) = pending.pop() {
            if !seen.insert(ty) {
                continue;
            }
            match self.by_type.get(&ty) {
                Some(codec) => pending.extend(codec.parts.iter().copied()),
                None => return Some(name),
            }
        }
        None
    }

    /// `value` as JSON, through `T`'s registered codec.
    ///
    /// # Errors
    /// [`Error::Serialization`] when `T` has no codec or does not encode.
    pub fn encode<T: Send + 'static>(&self, value: &T) -> Result<Json, Error> {
        let codec = self.codec::<T>()?;
        (codec.encode)(value, self)
    }

    /// A `T` from its JSON form, through `T`'s registered codec.
    ///
    /// # Errors
    /// [`Error::Serialization`] when `T` has no codec or `json` is not a `T`.
    pub fn decode<T: Send + 'static>(&self, json: Json) -> Result<T, Error> {
        let codec = self.codec::<T>()?;
        match (codec.decode)(json, self)?.downcast::<T>() {
            Ok(value) => Ok(*value),
            Err(_) => Err(mismatch::<T>()),
        }
    }

    /// `value` as JSON, through the codec of its dynamic type (`None`: no codec for it).
    pub(crate) fn encode_dyn(&self, value: &(dyn Any + Send)) -> Option<Result<Json, Error>> {
        let codec = self.by_type.get(&(*value).type_id())?;
        Some((codec.encode)(value, self))
    }

    fn codec<T: 'static>(&self) -> Result<&Codec, Error> {
        self.by_type
            .get(&TypeId::of::<T>())
            .ok_or_else(|| Error::Serialization {
                message: format!("no JSON codec for `{}`", std::any::type_name::<T>()),
            })
    }
}

/// `value` as JSON.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Json, Error> {
    serde_json::to_value(value).map_err(|e| Error::Serialization {
        message: format!("encoding `{}`: {e}", std::any::type_name::<T>()),
    })
}

/// A `T` from `json`.
pub(crate) fn decode<T: DeserializeOwned>(json: Json) -> Result<T, Error> {
    serde_json::from_value(json).map_err(|e| Error::Serialization {
        message: format!("decoding `{}`: {e}", std::any::type_name::<T>()),
    })
}

fn mismatch<T>() -> Error {
    Error::Serialization {
        message: format!(
            "codec registered for `{}` saw another type",
            std::any::type_name::<T>()
        ),
    }
}
