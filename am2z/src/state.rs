//! What a run produces: its output, its metadata and its outcome types.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, SessionId};

/// A run's unique id: an RFC 4122 version-4 UUID (122 random bits from the operating system),
/// shown as 32 hex digits.
///
/// Ids are unguessable: knowing some runs' ids tells nothing about another's, so an id can
/// serve as a handle in URLs and APIs. Random bytes are drawn from the operating system in
/// blocks and handed out per thread, so making an id costs no system call in the common case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(u128);

impl RunId {
    /// A fresh random id.
    ///
    /// # Panics
    /// Only if the operating system refuses to give random bytes, which no supported platform
    /// does once booted (there is no safe id to fall back to).
    pub fn generate() -> Self {
        let random = entropy::next_u128();
        // Version 4 (random) in bits 76..80, variant `10` in bits 62..64.
        let uuid = (random & !(0xF << 76) & !(0b11 << 62)) | (0x4 << 76) | (0b10 << 62);
        RunId(uuid)
    }

    /// The id as a number.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// Rebuilds an id from its number (as stored by another process).
    pub fn from_u128(raw: u128) -> Self {
        RunId(raw)
    }
}

/// Random bytes from the operating system, drawn a block at a time per thread.
mod entropy {
    use std::cell::RefCell;

    /// Ids per system call.
    const BLOCK: usize = 32;

    struct Pool {
        bytes: [u8; 16 * BLOCK],
        used: usize,
        /// The process that drew the bytes: a forked child draws its own rather than repeat
        /// its parent's ids.
        pid: u32,
    }

    thread_local! {
        static POOL: RefCell<Pool> = const {
            RefCell::new(Pool { bytes: [0; 16 * BLOCK], used: 16 * BLOCK, pid: 0 })
        };
    }

    pub(super) fn next_u128() -> u128 {
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            let pid = std::process::id();
            if pool.used == pool.bytes.len() || pool.pid != pid {
                // No id without randomness: an unguessable id is the contract.
                #[allow(clippy::expect_used)]
                getrandom::getrandom(&mut pool.bytes)
                    .expect("the operating system gives random bytes");
                pool.used = 0;
                pool.pid = pid;
            }
            let at = pool.used;
            pool.used += 16;
            let mut id = [0; 16];
            id.copy_from_slice(&pool.bytes[at..at + 16]);
            u128::from_be_bytes(id)
        })
    }
}

impl RunId {
    /// The 32 lowercase hex digits the id is shown as, without going through `fmt` (ids are
    /// formatted for every key, message and event of a run).
    pub(crate) fn hex(self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, byte) in self.0.to_be_bytes().into_iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(byte >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
        }
        out
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // Hex digits are ASCII.
        f.pad(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({self})")
    }
}

impl Serialize for RunId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses the 32 hex digits a run id is shown as.
///
/// ```
/// use am2z::RunId;
///
/// let id = RunId::generate();
/// assert_eq!(id.to_string().parse::<RunId>().unwrap(), id);
/// assert!("12".parse::<RunId>().is_err());
/// ```
impl std::str::FromStr for RunId {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::validation(
                "run_id",
                format!("`{}` is not 32 hex digits", text.escape_debug()),
            ));
        }
        u128::from_str_radix(text, 16)
            .map(RunId)
            .map_err(|e| Error::validation("run_id", e.to_string()))
    }
}

/// Facts about a run, carried beside its output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The session the run belongs to.
    pub session_id: SessionId,
    /// The run's id.
    pub run_id: RunId,
    /// Incremented once per step the run completed.
    pub version: u64,
    /// When the run started.
    pub created_at: SystemTime,
    /// When the run last completed a step.
    pub updated_at: SystemTime,
}

/// A successful run: the output and how it was produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult<T> {
    /// What the processor or workflow returned.
    pub output: T,
    /// The run's metadata.
    pub meta: Metadata,
    /// Processor attempts the run made, summed over its steps (retries included).
    pub attempts: u32,
    /// Wall-clock time from submission to outcome.
    pub execution_time: Duration,
}

/// A failed run: the error and the run's metadata at the moment it failed.
///
/// It converts into [`Error`] with `?`, and derefs to it for matching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}")]
pub struct RunFailure {
    /// The terminal error (the last attempt's, after retries).
    #[source]
    pub error: Error,
    /// The run's metadata.
    pub meta: Metadata,
    /// Processor attempts the run made, summed over its steps.
    pub attempts: u32,
    /// Wall-clock time from submission to outcome.
    pub execution_time: Duration,
}

impl std::ops::Deref for RunFailure {
    type Target = Error;
    fn deref(&self) -> &Error {
        &self.error
    }
}

impl From<RunFailure> for Error {
    fn from(failure: RunFailure) -> Self {
        failure.error
    }
}

/// The outcome of one run.
pub type RunOutcome<T> = Result<RunResult<T>, RunFailure>;

/// The state a failed step received, kept for the caller.
///
/// In-process it holds the value itself ([`downcast`](StateSnapshot::downcast)); after a trip
/// through Redis it holds its JSON form ([`decode`](StateSnapshot::decode)).
#[derive(Clone)]
pub struct StateSnapshot {
    type_name: String,
    json: Option<serde_json::Value>,
    local: Option<Arc<Mutex<Box<dyn Any + Send>>>>,
}

impl StateSnapshot {
    /// Keeps `value` in-process.
    pub fn local<T: Clone + Send + 'static>(value: T) -> Self {
        StateSnapshot {
            type_name: std::any::type_name::<T>().to_owned(),
            json: None,
            local: Some(Arc::new(Mutex::new(Box::new(value)))),
        }
    }

    /// Keeps `value` in its JSON form.
    pub fn json(type_name: impl Into<String>, value: serde_json::Value) -> Self {
        StateSnapshot {
            type_name: type_name.into(),
            json: Some(value),
            local: None,
        }
    }

    /// The Rust type name of the kept state.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The kept state, if it is a `T` held in-process.
    pub fn downcast<T: Clone + 'static>(&self) -> Option<T> {
        let local = self.local.as_ref()?;
        let guard = local
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.downcast_ref::<T>().cloned()
    }

    /// The kept state decoded from its JSON form (after crossing a process boundary).
    ///
    /// # Errors
    /// [`Error::Serialization`] when there is no JSON form or it is not a `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        let json = self.json.as_ref().ok_or_else(|| Error::Serialization {
            message: format!(
                "state `{}` was kept in-process; use downcast",
                self.type_name
            ),
        })?;
        Ok(T::deserialize(json)?)
    }
}

impl fmt::Debug for StateSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateSnapshot")
            .field("type_name", &self.type_name)
            .field("json", &self.json)
            .field("local", &self.local.is_some())
            .finish()
    }
}

impl PartialEq for StateSnapshot {
    fn eq(&self, other: &Self) -> bool {
        let same_local = match (&self.local, &other.local) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        self.type_name == other.type_name && self.json == other.json && same_local
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotWire {
    type_name: String,
    #[serde(default)]
    json: Option<serde_json::Value>,
}

impl Serialize for StateSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SnapshotWire {
            type_name: self.type_name.clone(),
            json: self.json.clone(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StateSnapshot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = SnapshotWire::deserialize(deserializer)?;
        Ok(StateSnapshot {
            type_name: wire.type_name,
            json: wire.json,
            local: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_unique_and_round_trip() {
        let a = RunId::generate();
        let b = RunId::generate();
        assert_ne!(a, b);
        let wire = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<RunId>(&wire).unwrap(), a);
    }

    /// An id shows as its 32 lowercase hex digits, leading zeros kept, and honours width.
    #[test]
    fn run_ids_show_as_32_hex_digits() {
        for value in [
            0,
            1,
            0xab,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            let id = RunId(value);
            assert_eq!(id.to_string(), format!("{value:032x}"));
            assert_eq!(id.to_string().parse::<RunId>().unwrap(), id);
        }
        assert_eq!(format!("{:>34}|", RunId(1)), format!("  {:032x}|", 1));
    }

    /// Ids are version-4 UUIDs: the version and variant bits are fixed, and every one of the
    /// other 122 bits takes both values over a few thousand ids (a counter-based id would
    /// leave its high bits fixed).
    #[test]
    fn run_ids_are_random_version_4_uuids() {
        let ids: Vec<u128> = (0..4_000).map(|_| RunId::generate().as_u128()).collect();
        let mut ones = [0_u32; 128];
        for id in &ids {
            assert_eq!((id >> 76) & 0xF, 4, "version nibble of {id:032x}");
            assert_eq!((id >> 62) & 0b11, 0b10, "variant bits of {id:032x}");
            for (bit, count) in ones.iter_mut().enumerate() {
                *count += u32::try_from((id >> bit) & 1).unwrap();
            }
        }
        let fixed = [62, 63, 76, 77, 78, 79];
        for (bit, count) in ones.iter().enumerate() {
            if !fixed.contains(&bit) {
                assert!(
                    (1_000..3_000).contains(count),
                    "bit {bit} is set in {count} of 4000 ids"
                );
            }
        }
        let distinct: std::collections::HashSet<u128> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len());
        // Other threads draw from their own pool.
        let other = std::thread::spawn(RunId::generate).join().unwrap();
        assert!(!distinct.contains(&other.as_u128()));
    }

    #[test]
    fn snapshots_keep_local_values() {
        let snap = StateSnapshot::local(vec![1, 2, 3]);
        assert_eq!(snap.downcast::<Vec<i32>>(), Some(vec![1, 2, 3]));
        assert_eq!(snap.downcast::<String>(), None);
        assert!(snap.decode::<Vec<i32>>().is_err());
    }
}
