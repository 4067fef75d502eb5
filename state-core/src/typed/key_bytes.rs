//! A key's postcard encoding on the stack, for code that needs a key's
//! bytes once per record without keeping them (routing by key group).

use serde::Serialize;

use crate::{Result, StateError};

/// Keys up to this many encoded bytes are encoded on the stack.
const STACK_BYTES: usize = 64;

/// A postcard flavor writing into a stack buffer byte by byte: the varints
/// and short strings of keys are a few bytes, for which a call to `memcpy`
/// (what postcard's slice flavor makes of them) costs more than the copy.
struct Stack<'a> {
    buf: &'a mut [u8; STACK_BYTES],
    len: usize,
}

impl postcard::ser_flavors::Flavor for Stack<'_> {
    type Output = usize;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        let slot = self
            .buf
            .get_mut(self.len)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        *slot = byte;
        self.len += 1;
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // Byte by byte on purpose (the early return keeps the loop from
        // becoming a `memcpy` call again).
        for &byte in data {
            self.try_push(byte)?;
        }
        Ok(())
    }

    #[inline]
    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.len)
    }
}

/// Calls `f` with `key`'s postcard encoding, the bytes
/// [`crate::typed::KeyedState::set_current_key`] makes of it: on the stack
/// for keys of up to 64 encoded bytes, in an allocation beyond.
#[inline]
pub fn with_key_bytes<K: Serialize + ?Sized, R>(key: &K, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
    let mut buf = [0u8; STACK_BYTES];
    let stack = Stack {
        buf: &mut buf,
        len: 0,
    };
    match postcard::serialize_with_flavor(key, stack) {
        Ok(len) => Ok(f(buf.get(..len).unwrap_or_default())),
        Err(_) => match postcard::to_stdvec(key) {
            Ok(bytes) => Ok(f(&bytes)),
            Err(e) => Err(StateError::invalid(format!(
                "the current key cannot be serialized: {e}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_are_postcards_for_short_and_long_keys() {
        let long = "k".repeat(200);
        let keys: [&dyn erased::Key; 5] = [&0u64, &u64::MAX, &"word", &(7u32, "pair"), &long];
        for key in keys {
            let expected = key.postcard();
            let got = key.with_key_bytes().unwrap();
            assert_eq!(got, expected);
        }
    }

    /// Keys of different types behind one trait, for the table above.
    mod erased {
        use serde::Serialize;

        pub(super) trait Key {
            fn postcard(&self) -> Vec<u8>;
            fn with_key_bytes(&self) -> crate::Result<Vec<u8>>;
        }

        impl<T: Serialize> Key for T {
            fn postcard(&self) -> Vec<u8> {
                postcard::to_stdvec(self).unwrap()
            }
            fn with_key_bytes(&self) -> crate::Result<Vec<u8>> {
                super::with_key_bytes(self, <[u8]>::to_vec)
            }
        }
    }
}
