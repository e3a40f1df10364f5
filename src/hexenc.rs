//! Lowercase hex, written through a table: the receipts' hashes are
//! encoded several times for every event, and the `hex` crate's encoder
//! builds its string one `char` at a time.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lowercase hex.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    let bytes = bytes.as_ref();
    let mut out = String::with_capacity(bytes.len() * 2);
    encode_into(bytes, &mut out);
    out
}

/// Appends `bytes` as lowercase hex to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len() * 2);
    // A hash at a time through a buffer on the stack: pushing one `char`
    // at a time checks the capacity and encodes UTF-8 for each digit.
    for chunk in bytes.chunks(32) {
        let mut digits = [0u8; 64];
        for (pair, b) in digits.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        let text = &digits[..chunk.len() * 2];
        out.push_str(std::str::from_utf8(text).expect("hex digits are ASCII"));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn agrees_with_the_hex_crate(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            prop_assert_eq!(super::encode(&bytes), hex::encode(&bytes));
            let mut out = String::from("x");
            super::encode_into(&bytes, &mut out);
            prop_assert_eq!(out, format!("x{}", hex::encode(&bytes)));
        }
    }
}
