//! 128-bit ids and fencing tokens.
//!
//! Flink's `AbstractID` is 16 random bytes shown as 32 lowercase hex characters; every id in rflink
//! (job ids, allocation ids, the fencing tokens) is a distinct newtype over [`AbstractId`], made with
//! [`define_id!`](crate::define_id), so the compiler refuses a `JobMasterId` where a
//! `ResourceManagerId` is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A 128-bit id, displayed as 32 hex characters like Flink's `AbstractID`.
///
/// Serialized as those 32 hex characters in human-readable formats (JSON: JavaScript numbers
/// cannot hold 128 bits) and as a 128-bit integer in binary ones (the RPC wire).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AbstractId(u128);

impl Serialize for AbstractId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u128(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for AbstractId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            u128::deserialize(d).map(AbstractId)
        }
    }
}

impl AbstractId {
    /// A fresh random id.
    pub fn generate() -> Self {
        AbstractId(rand::random())
    }

    /// The id with the given bits.
    pub const fn from_u128(bits: u128) -> Self {
        AbstractId(bits)
    }

    /// The id's bits.
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for AbstractId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for AbstractId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a 32-character hex id")]
pub struct ParseIdError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for AbstractId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError { input: s.into() };
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        u128::from_str_radix(s, 16)
            .map(AbstractId)
            .map_err(|_| err())
    }
}

/// A token that fences an endpoint: messages are accepted only when they carry the endpoint's
/// token. Flink: the `F` of `FencedRpcEndpoint<F>`.
pub trait FencingToken:
    Copy + Eq + fmt::Debug + fmt::Display + Send + Sync + Unpin + 'static
{
    /// The token as stamped on the wire; `None` for [`Unfenced`].
    fn to_wire(&self) -> Option<AbstractId>;
}

/// The "token" of an unfenced endpoint (Flink's TaskExecutor): every message is admitted, and
/// ids that need guarding are checked in the message arguments instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unfenced;

impl fmt::Display for Unfenced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unfenced")
    }
}

impl FencingToken for Unfenced {
    fn to_wire(&self) -> Option<AbstractId> {
        None
    }
}

/// Defines a 128-bit id newtype over [`AbstractId`]: `Copy`, `Eq`, `Hash`, serde, shown as 32 hex
/// characters, parsed from them, with `generate()`. [`define_fencing_token!`](crate::define_fencing_token)
/// makes one that is also a [`FencingToken`].
///
/// ```
/// rflink_rpc::define_id! {
///     /// Identifies a job.
///     pub struct JobId;
/// }
/// rflink_rpc::define_fencing_token! {
///     /// Fences a JobMaster.
///     pub struct JobMasterId;
/// }
/// let id = JobId::generate();
/// assert_eq!(id.to_string().len(), 32);
/// assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
/// use rflink_rpc::FencingToken;
/// assert!(JobMasterId::generate().to_wire().is_some());
/// ```
#[macro_export]
macro_rules! define_id {
    ($(#[$meta:meta])* $vis:vis struct $name:ident;) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            $crate::__private::serde::Serialize, $crate::__private::serde::Deserialize,
        )]
        #[serde(crate = "rflink_rpc::__private::serde")]
        $vis struct $name($crate::AbstractId);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                $name($crate::AbstractId::generate())
            }
            /// The id with the given bits.
            pub const fn from_u128(bits: u128) -> Self {
                $name($crate::AbstractId::from_u128(bits))
            }
            /// The underlying 128-bit id.
            pub const fn as_abstract_id(&self) -> $crate::AbstractId {
                self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::ParseIdError;
            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                s.parse::<$crate::AbstractId>().map($name)
            }
        }
    };
}

/// Defines a 128-bit id newtype like [`define_id!`](crate::define_id) that is also a
/// [`FencingToken`]: `DispatcherId`, `ResourceManagerId`, `JobMasterId`.
#[macro_export]
macro_rules! define_fencing_token {
    ($(#[$meta:meta])* $vis:vis struct $name:ident;) => {
        $crate::define_id! {
            $(#[$meta])*
            $vis struct $name;
        }

        impl $crate::FencingToken for $name {
            fn to_wire(&self) -> ::std::option::Option<$crate::AbstractId> {
                ::std::option::Option::Some(self.0)
            }
        }
    };
}

#[cfg(test)]
#[allow(dead_code)] // Only part of the generated API is exercised here.
mod tests {
    use super::*;

    crate::define_fencing_token! {
        /// A test token.
        pub struct TestToken;
    }
    crate::define_id! {
        /// A test id.
        pub struct TestId;
    }

    #[test]
    fn shows_32_hex_chars_and_parses_back() {
        let id = AbstractId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(id.to_string(), "0123456789abcdef0011223344556677");
        assert_eq!(id.to_string().parse::<AbstractId>(), Ok(id));
        let token = TestToken::generate();
        assert_eq!(token.to_string().parse::<TestToken>(), Ok(token));
        assert_eq!(token.to_wire(), Some(token.as_abstract_id()));
        assert!(format!("{:?}", TestId::from_u128(1)).starts_with("TestId(000"));
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "xyz",
            "0123",
            &"g".repeat(32),
            &"0".repeat(33),
            "+0000000000000000000000000000001",
        ] {
            assert!(bad.parse::<AbstractId>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn json_uses_hex_and_the_wire_uses_integers() {
        let id = TestId::from_u128(0xab);
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, "\"000000000000000000000000000000ab\"");
        assert_eq!(serde_json::from_str::<TestId>(&json).expect("parses"), id);
        assert!(serde_json::from_str::<TestId>("\"nope\"").is_err());
        let wire = rmp_serde::to_vec(&id).expect("rmp");
        assert_eq!(
            rmp_serde::from_slice::<TestId>(&wire).expect("rmp back"),
            id
        );
        assert!(
            wire.len() <= 18,
            "binary form stays compact: {} bytes",
            wire.len()
        );
    }

    #[test]
    fn generated_ids_differ_and_unfenced_has_no_wire_token() {
        assert_ne!(AbstractId::generate(), AbstractId::generate());
        assert_eq!(Unfenced.to_wire(), None);
    }
}
