//! A bounded cursor over untrusted bytes.
//!
//! Every parser in [`crate`] reads through [`Reader`]: each read checks the remaining
//! length first, so a declared size can never make us read past the input or allocate more than
//! the input holds. Errors carry the absolute offset of the problem, which the CLI prints.

use std::fmt;

/// What went wrong while reading, and where (offset from the start of the input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at offset {offset}: {problem}")]
pub struct ReadError {
    pub offset: usize,
    pub problem: Problem,
}

/// The kind of read failure.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// Fewer bytes remain than a field needs.
    Truncated {
        field: &'static str,
        needed: usize,
        available: usize,
    },
    /// A declared length exceeds the limit for that field.
    TooLarge {
        field: &'static str,
        declared: usize,
        limit: usize,
    },
    /// A value is not one the format allows.
    Invalid { field: &'static str, detail: String },
    /// Bytes remain after a structure that must fill its input exactly.
    TrailingBytes { count: usize },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Truncated {
                field,
                needed,
                available,
            } => {
                write!(
                    f,
                    "{field}: truncated (needs {needed} bytes, {available} remain)"
                )
            }
            Problem::TooLarge {
                field,
                declared,
                limit,
            } => {
                write!(
                    f,
                    "{field}: declared size {declared} exceeds the limit {limit}"
                )
            }
            Problem::Invalid { field, detail } => write!(f, "{field}: {detail}"),
            Problem::TrailingBytes { count } => write!(f, "{count} unexpected trailing bytes"),
        }
    }
}

/// A cursor over a byte slice that never reads out of bounds.
///
/// `base` is the absolute offset of `bytes[0]` in the whole input, so a sub-reader over one
/// event still reports offsets relative to the start of the file.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            position: 0,
            base: 0,
        }
    }

    /// Absolute offset of the next byte to be read.
    pub fn offset(&self) -> usize {
        self.base + self.position
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unread bytes, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }

    /// An error at the current offset.
    pub fn error(&self, problem: Problem) -> ReadError {
        ReadError {
            offset: self.offset(),
            problem,
        }
    }

    /// An `Invalid` error at the current offset.
    pub fn invalid(&self, field: &'static str, detail: impl Into<String>) -> ReadError {
        self.error(Problem::Invalid {
            field,
            detail: detail.into(),
        })
    }

    /// Takes exactly `count` bytes.
    pub fn bytes(&mut self, field: &'static str, count: usize) -> Result<&'a [u8], ReadError> {
        let available = self.remaining();
        if count > available {
            return Err(self.error(Problem::Truncated {
                field,
                needed: count,
                available,
            }));
        }
        let start = self.position;
        self.position += count;
        self.bytes.get(start..self.position).ok_or_else(|| {
            self.error(Problem::Truncated {
                field,
                needed: count,
                available,
            })
        })
    }

    /// Takes `count` bytes after checking `count <= limit`, so a hostile length is refused
    /// before anything is read.
    pub fn bytes_limited(
        &mut self,
        field: &'static str,
        count: usize,
        limit: usize,
    ) -> Result<&'a [u8], ReadError> {
        if count > limit {
            return Err(self.error(Problem::TooLarge {
                field,
                declared: count,
                limit,
            }));
        }
        self.bytes(field, count)
    }

    /// A sub-reader over the next `count` bytes (offsets stay absolute).
    pub fn sub(&mut self, field: &'static str, count: usize) -> Result<Reader<'a>, ReadError> {
        let base = self.offset();
        let bytes = self.bytes(field, count)?;
        Ok(Reader {
            bytes,
            position: 0,
            base,
        })
    }

    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ReadError> {
        let slice = self.bytes(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, ReadError> {
        Ok(u8::from_be_bytes(self.array(field)?))
    }

    pub fn u16_be(&mut self, field: &'static str) -> Result<u16, ReadError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub fn u32_be(&mut self, field: &'static str) -> Result<u32, ReadError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn u64_be(&mut self, field: &'static str) -> Result<u64, ReadError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub fn u16_le(&mut self, field: &'static str) -> Result<u16, ReadError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub fn u32_le(&mut self, field: &'static str) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub fn u64_le(&mut self, field: &'static str) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A TPM2B: big-endian u16 size, then that many bytes (at most `limit`).
    pub fn tpm2b(&mut self, field: &'static str, limit: usize) -> Result<&'a [u8], ReadError> {
        let size = usize::from(self.u16_be(field)?);
        self.bytes_limited(field, size, limit)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), ReadError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(self.error(Problem::TrailingBytes { count })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded_and_offsets_absolute() {
        let data = [0u8, 3, 1, 2, 3, 9];
        let mut r = Reader::new(&data);
        assert_eq!(r.tpm2b("x", 16).unwrap(), &[1, 2, 3]);
        let mut sub = r.sub("tail", 1).unwrap();
        assert_eq!(sub.offset(), 5);
        assert_eq!(sub.u8("b").unwrap(), 9);
        let err = sub.u8("b").unwrap_err();
        assert_eq!(err.offset, 6);
        assert!(r.finish().is_ok());
    }

    #[test]
    fn declared_size_over_limit_is_refused_before_reading() {
        let data = [0xffu8, 0xff];
        let mut r = Reader::new(&data);
        let err = r.tpm2b("name", 68).unwrap_err();
        assert!(matches!(
            err.problem,
            Problem::TooLarge {
                declared: 65535,
                limit: 68,
                ..
            }
        ));
    }
}
