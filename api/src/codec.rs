//! Record serialization: the [`Codec`] trait and the [`Record`] / [`Key`] bounds.
//!
//! Records cross a process boundary (or a non-local subpartition) as bytes produced by
//! [`Codec::encode`]; inside a chain and between local tasks they travel by value and are never
//! encoded. The format is compact and not self-describing:
//!
//! - fixed-size integers and floats are little-endian (`usize`/`isize` as 8 bytes);
//! - `bool` is one byte (`0` or `1`), `char` is its `u32` scalar value;
//! - lengths (of `String`, `Vec<T>`) are unsigned LEB128 varints;
//! - `Option<T>` is a tag byte (`0` = `None`, `1` = `Some`) followed by the value;
//! - tuples and `Box<T>` are their parts in order, `()` is nothing.
//!
//! # Invariants
//! [`Codec::decode`] never panics and never allocates more than the input could describe: a
//! malformed or truncated input yields a [`DecodeError`].

use std::hash::Hash;

/// Why bytes could not be decoded into a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the value was complete.
    #[error("unexpected end of input: needed {needed} more bytes, {remaining} left")]
    UnexpectedEnd {
        /// Bytes the decoder needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A tag byte (bool, `Option`) had a value the format does not define.
    #[error("invalid tag byte {tag} for {what}")]
    InvalidTag {
        /// The byte found.
        tag: u8,
        /// The type being decoded.
        what: &'static str,
    },
    /// A string's bytes were not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A `char` value was not a Unicode scalar value.
    #[error("invalid char scalar value {0:#x}")]
    InvalidChar(u32),
    /// A varint was longer than 10 bytes or a value did not fit the target type.
    #[error("integer or length out of range")]
    OutOfRange,
    /// A whole record was decoded but bytes were left over.
    #[error("{0} trailing bytes after the record")]
    TrailingBytes(usize),
}

/// A value that can be written to and read back from bytes.
///
/// Implementations must round-trip (`decode(encode(v)) == v`) and `decode` must never panic on
/// arbitrary input.
pub trait Codec: Sized {
    /// A lower bound on the encoded size of any value, in bytes. Decoders of sequences use it to
    /// reject impossible lengths before allocating; `0` (the default) is always safe.
    const MIN_ENCODED_LEN: usize = 0;
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `input` and advances it past the bytes consumed.
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError>;
}

/// Everything a `DataStream` element must be: cloneable (fan-out, broadcast), sendable between
/// task threads, `'static`, and encodable for the network.
pub trait Record: Clone + Send + 'static + Codec {}
impl<T: Clone + Send + 'static + Codec> Record for T {}

/// A key of a `KeyedStream`: a record that can be hashed and compared.
pub trait Key: Record + Hash + Eq {}
impl<T: Record + Hash + Eq> Key for T {}

/// Encodes `value` into a fresh vector.
pub fn encode_to_vec<T: Codec>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}

/// Decodes exactly one value from `bytes`; leftover bytes are an error.
pub fn decode_exact<T: Codec>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut input = bytes;
    let value = T::decode(&mut input)?;
    if input.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes(input.len()))
    }
}

/// The longest sequence accepted for item types whose encoding may be empty.
const MAX_ZERO_SIZED_ITEMS: u64 = 1 << 24;

/// Splits `n` bytes off the front of `input`.
fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if input.len() < n {
        return Err(DecodeError::UnexpectedEnd {
            needed: n,
            remaining: input.len(),
        });
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

fn take_array<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let bytes = take(input, N)?;
    let mut array = [0u8; N];
    array.copy_from_slice(bytes);
    Ok(array)
}

/// Appends `value` as an unsigned LEB128 varint.
pub fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned LEB128 varint.
pub fn read_varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..10u32 {
        let [byte] = take_array::<1>(input)?;
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return Err(DecodeError::OutOfRange);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::OutOfRange)
}

/// Reads a length prefix and checks that at least `len * min_item_size` bytes follow, so that a
/// corrupt length cannot trigger a huge allocation.
fn read_len(input: &mut &[u8], min_item_size: usize) -> Result<usize, DecodeError> {
    let len = usize::try_from(read_varint(input)?).map_err(|_| DecodeError::OutOfRange)?;
    let needed = len
        .checked_mul(min_item_size)
        .ok_or(DecodeError::OutOfRange)?;
    if needed > input.len() {
        return Err(DecodeError::UnexpectedEnd {
            needed,
            remaining: input.len(),
        });
    }
    Ok(len)
}

macro_rules! fixed_codec {
    ($($t:ty),*) => {$(
        impl Codec for $t {
            const MIN_ENCODED_LEN: usize = std::mem::size_of::<$t>();
            #[inline]
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
                Ok(<$t>::from_le_bytes(take_array(input)?))
            }
        }
    )*};
}
fixed_codec!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);

impl Codec for usize {
    const MIN_ENCODED_LEN: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as u64).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        usize::try_from(u64::decode(input)?).map_err(|_| DecodeError::OutOfRange)
    }
}

impl Codec for isize {
    const MIN_ENCODED_LEN: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        (*self as i64).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        isize::try_from(i64::decode(input)?).map_err(|_| DecodeError::OutOfRange)
    }
}

impl Codec for bool {
    const MIN_ENCODED_LEN: usize = 1;
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        match take_array::<1>(input)? {
            [0] => Ok(false),
            [1] => Ok(true),
            [tag] => Err(DecodeError::InvalidTag { tag, what: "bool" }),
        }
    }
}

impl Codec for char {
    const MIN_ENCODED_LEN: usize = 4;
    fn encode(&self, out: &mut Vec<u8>) {
        u32::from(*self).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let scalar = u32::decode(input)?;
        char::from_u32(scalar).ok_or(DecodeError::InvalidChar(scalar))
    }
}

impl Codec for String {
    const MIN_ENCODED_LEN: usize = 1;
    fn encode(&self, out: &mut Vec<u8>) {
        write_varint(self.len() as u64, out);
        out.extend_from_slice(self.as_bytes());
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let len = read_len(input, 1)?;
        let bytes = take(input, len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8)
    }
}

impl Codec for () {
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn decode(_input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(())
    }
}

impl<T: Codec> Codec for Vec<T> {
    const MIN_ENCODED_LEN: usize = 1;
    fn encode(&self, out: &mut Vec<u8>) {
        write_varint(self.len() as u64, out);
        for item in self {
            item.encode(out);
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let len = if T::MIN_ENCODED_LEN > 0 {
            read_len(input, T::MIN_ENCODED_LEN)?
        } else {
            // Items may encode to nothing (`()`), so the input cannot bound the length; a fixed
            // cap keeps a corrupt length from looping for ages.
            let len = read_varint(input)?;
            if len > MAX_ZERO_SIZED_ITEMS {
                return Err(DecodeError::OutOfRange);
            }
            len as usize
        };
        let mut items = Vec::with_capacity(len.min(input.len()));
        for _ in 0..len {
            items.push(T::decode(input)?);
        }
        Ok(items)
    }
}

impl<T: Codec> Codec for Option<T> {
    const MIN_ENCODED_LEN: usize = 1;
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                value.encode(out);
            }
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        match take_array::<1>(input)? {
            [0] => Ok(None),
            [1] => Ok(Some(T::decode(input)?)),
            [tag] => Err(DecodeError::InvalidTag {
                tag,
                what: "Option",
            }),
        }
    }
}

impl<T: Codec> Codec for Box<T> {
    const MIN_ENCODED_LEN: usize = T::MIN_ENCODED_LEN;
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        T::decode(input).map(Box::new)
    }
}

macro_rules! tuple_codec {
    ($($name:ident),+) => {
        impl<$($name: Codec),+> Codec for ($($name,)+) {
            const MIN_ENCODED_LEN: usize = 0 $(+ $name::MIN_ENCODED_LEN)+;
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode(out);)+
            }
            fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
                Ok(($($name::decode(input)?,)+))
            }
        }
    };
}
tuple_codec!(A);
tuple_codec!(A, B);
tuple_codec!(A, B, C);
tuple_codec!(A, B, C, D);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip<T: Codec + PartialEq + std::fmt::Debug>(value: T) {
        let bytes = encode_to_vec(&value);
        assert_eq!(decode_exact::<T>(&bytes), Ok(value));
    }

    #[test]
    fn primitives_round_trip() {
        round_trip(true);
        round_trip(false);
        round_trip(0u8);
        round_trip(u16::MAX);
        round_trip(-5i32);
        round_trip(i64::MIN);
        round_trip(u128::MAX);
        round_trip(usize::MAX);
        round_trip(-1isize);
        round_trip(1.5f32);
        round_trip(-0.25f64);
        round_trip('é');
        round_trip(());
        round_trip(String::from("hello wörld"));
        round_trip(String::new());
    }

    #[test]
    fn composites_round_trip() {
        round_trip(vec![1u32, 2, 3]);
        round_trip(Vec::<String>::new());
        round_trip(Some(String::from("x")));
        round_trip(None::<u8>);
        round_trip(Box::new(7u64));
        round_trip((1u8,));
        round_trip((String::from("word"), 3u64));
        round_trip((1u8, -2i16, 'z'));
        round_trip((1u8, vec![(); 5], Some(true), String::from("d")));
        round_trip(vec![vec![Some((1i64, String::from("a")))], vec![None]]);
    }

    #[test]
    fn encoding_is_compact_little_endian() {
        assert_eq!(encode_to_vec(&0x0102u16), vec![2, 1]);
        assert_eq!(encode_to_vec(&String::from("ab")), vec![2, b'a', b'b']);
        assert_eq!(encode_to_vec(&300u64).len(), 8);
        let mut varint = Vec::new();
        write_varint(300, &mut varint);
        assert_eq!(varint, vec![0xac, 0x02]);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert_eq!(
            decode_exact::<u32>(&[1, 2]),
            Err(DecodeError::UnexpectedEnd {
                needed: 4,
                remaining: 2
            })
        );
        assert_eq!(
            decode_exact::<bool>(&[2]),
            Err(DecodeError::InvalidTag {
                tag: 2,
                what: "bool"
            })
        );
        assert_eq!(
            decode_exact::<String>(&[1, 0xff]),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            decode_exact::<char>(&0xd800u32.to_le_bytes()),
            Err(DecodeError::InvalidChar(0xd800))
        );
        assert_eq!(
            decode_exact::<u8>(&[1, 2]),
            Err(DecodeError::TrailingBytes(1))
        );
        assert_eq!(
            decode_exact::<u64>(&[0xff; 11][..]),
            Err(DecodeError::TrailingBytes(3))
        );
        // A huge claimed length must fail without allocating it.
        let mut huge = Vec::new();
        write_varint(u64::MAX / 2, &mut huge);
        assert!(decode_exact::<String>(&huge).is_err());
        assert!(decode_exact::<Vec<u64>>(&huge).is_err());
        assert_eq!(
            read_varint(&mut &[0xffu8; 12][..]),
            Err(DecodeError::OutOfRange)
        );
    }

    proptest! {
        #[test]
        fn decode_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_exact::<(String, u64)>(&bytes);
            let _ = decode_exact::<Vec<Option<(char, bool)>>>(&bytes);
            let _ = decode_exact::<(i8, Vec<String>, f64, Box<u16>)>(&bytes);
            let _ = decode_exact::<Vec<()>>(&bytes);
            let _ = decode_exact::<Vec<Vec<u128>>>(&bytes);
        }

        #[test]
        fn strings_and_tuples_round_trip(s in ".*", n in any::<i64>(), v in proptest::collection::vec(any::<u32>(), 0..20)) {
            let value = (s, n, v, Some('q'));
            let bytes = encode_to_vec(&value);
            prop_assert_eq!(decode_exact(&bytes), Ok(value));
        }
    }
}
