//! Hexadecimal text, as used on the command line, in policies and in output.

use thiserror::Error;

/// Why a string is not the hexadecimal value that was asked for.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HexError {
    #[error("odd number of hex digits ({0})")]
    DecodeOddLength(usize),
    #[error("invalid hex digit {0:?}")]
    DecodeDigit(char),
    #[error("expected {expected} bytes of hex, got {got}")]
    CheckLength { expected: usize, got: usize },
}

pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Decodes hex; an optional `0x` prefix is accepted.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.len() & 1 == 1 {
        return Err(HexError::DecodeOddLength(t.len()));
    }
    let nibble = |c: char| c.to_digit(16).ok_or(HexError::DecodeDigit(c));
    let chars: Vec<char> = t.chars().collect();
    chars
        .chunks(2)
        .map(|p| Ok((nibble(p[0])? << 4 | nibble(p[1])?) as u8))
        .collect()
}

/// Decodes exactly `N` bytes.
pub fn decode_exact<const N: usize>(text: &str) -> Result<[u8; N], HexError> {
    let v = decode(text)?;
    v.as_slice().try_into().map_err(|_| HexError::CheckLength {
        expected: N,
        got: v.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(encode(&[0x01, 0xab]), "01ab");
        assert_eq!(decode("0x01AB"), Ok(vec![0x01, 0xab]));
        assert_eq!(decode("abc"), Err(HexError::DecodeOddLength(3)));
        assert_eq!(decode("zz"), Err(HexError::DecodeDigit('z')));
        assert_eq!(
            decode_exact::<2>("01"),
            Err(HexError::CheckLength {
                expected: 2,
                got: 1
            })
        );
    }
}
