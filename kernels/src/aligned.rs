//! `AlignedBuf`: a growable f32 buffer whose start is 64-byte aligned.
//!
//! AVX-512 loads that straddle a cache line cost two; activations and expanded weights
//! live in these buffers so that rows whose length is a multiple of 16 floats start on a
//! cache line.

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

#[derive(Clone, Default)]
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    pub const fn new() -> AlignedBuf {
        AlignedBuf { lines: Vec::new(), len: 0 }
    }

    pub fn zeros(len: usize) -> AlignedBuf {
        let mut b = AlignedBuf::new();
        b.resize(len);
        b
    }

    /// Sets the length to `len`; new elements are zero, old ones keep their values.
    /// Never shrinks the allocation.
    pub fn resize(&mut self, len: usize) {
        let lines = len.div_ceil(16);
        if self.lines.len() < lines {
            self.lines.resize(lines, Line([0.0; 16]));
        }
        self.len = len;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: `lines` holds at least `len` f32 (Line is 16 f32, repr(C)).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const f32, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut f32, self.len) }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.as_slice()
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.as_mut_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_growing_keeps_values() {
        let mut b = AlignedBuf::zeros(5);
        assert_eq!(b.as_ptr() as usize % 64, 0);
        b[4] = 3.0;
        b.resize(100);
        assert_eq!(b.as_ptr() as usize % 64, 0);
        assert_eq!((b[4], b[99], b.len()), (3.0, 0.0, 100));
        b.resize(2);
        assert_eq!(b.len(), 2);
    }
}
