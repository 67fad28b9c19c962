//! The blocked activation layout of the CPU executor ([`super::graph`]): channels in blocks
//! of [`LANES`], stored `[block][row][column][lane]` with a one-pixel zero border.
//!
//! One pixel of one block is one 64-byte vector, so a kernel loads 16 channels at once, a
//! concat along channels is a range of blocks (producers write straight into it), and a 3×3
//! convolution reads its zero padding from the border instead of testing bounds. The
//! network's input image is the one buffer with narrower pixels (3 or 12 channels, no
//! padding lanes), which saves the first convolution 5× the reads of a 16-lane image.

/// Channels per block: one AVX-512 register of f32.
pub const LANES: usize = 16;

/// Border width in pixels around every buffer; 3×3 convolutions with padding 1 read it.
pub const BORDER: usize = 1;

/// Sixteen floats aligned to a cache line: buffers are vectors of these.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
pub struct Lanes(pub [f32; LANES]);

/// Shape and strides of an activation (or of a channel range of one) in floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Channels that hold data; lanes past them in the last block are zero.
    pub channels: usize,
    /// Channels per block: [`LANES`], or the image's channel count for the input.
    pub lanes: usize,
    /// Floats from one pixel to the next: [`LANES`], or `lanes` for the input.
    pub pixel: usize,
    pub height: usize,
    pub width: usize,
}

impl Layout {
    /// A blocked activation of `channels` × `height` × `width`.
    pub fn blocked(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            lanes: LANES,
            pixel: LANES,
            height,
            width,
        }
    }

    /// The network input: one block whose pixels are `channels` consecutive floats.
    pub fn packed_image(channels: usize, height: usize, width: usize) -> Self {
        Self {
            channels,
            lanes: channels,
            pixel: channels,
            height,
            width,
        }
    }

    pub fn blocks(&self) -> usize {
        self.channels.div_ceil(self.lanes)
    }

    pub fn row_stride(&self) -> usize {
        (self.width + 2 * BORDER) * self.pixel
    }

    pub fn block_stride(&self) -> usize {
        (self.height + 2 * BORDER) * self.row_stride()
    }

    /// Floats the whole buffer takes, border included.
    pub fn len(&self) -> usize {
        self.blocks() * self.block_stride()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offset of interior pixel `(y, x)` of `block`; `y`, `x` may be −1 or the size (the
    /// border).
    pub fn offset(&self, block: usize, y: isize, x: isize) -> usize {
        let row = (y + BORDER as isize) as usize;
        let col = (x + BORDER as isize) as usize;
        block * self.block_stride() + row * self.row_stride() + col * self.pixel
    }

    /// Offset of channel `c` at interior pixel `(y, x)`.
    pub fn channel_offset(&self, c: usize, y: usize, x: usize) -> usize {
        self.offset(c / self.lanes, y as isize, x as isize) + c % self.lanes
    }
}

/// A buffer's base pointer with its layout, as the kernels take them. The executor hands
/// out views of disjoint block ranges (or read-only views) for the duration of one op.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub ptr: *mut f32,
    pub layout: Layout,
}

// SAFETY: a view is a pointer plus sizes; the executor guarantees that no two ops touch
// the same floats concurrently (each parallel item writes its own output rows).
unsafe impl Send for View {}
unsafe impl Sync for View {}

impl View {
    /// Pointer to interior pixel `(y, x)` of `block` (border coordinates allowed).
    ///
    /// # Safety
    /// The coordinates must lie within the buffer, border included.
    pub unsafe fn at(&self, block: usize, y: isize, x: isize) -> *mut f32 {
        self.ptr.add(self.layout.offset(block, y, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_step_over_the_border() {
        let l = Layout::blocked(40, 4, 5);
        assert_eq!(l.blocks(), 3);
        assert_eq!(l.row_stride(), 7 * 16);
        assert_eq!(l.block_stride(), 6 * 7 * 16);
        assert_eq!(l.offset(0, -1, -1), 0);
        assert_eq!(l.offset(0, 0, 0), 7 * 16 + 16);
        assert_eq!(
            l.channel_offset(17, 0, 0),
            l.block_stride() + 7 * 16 + 16 + 1
        );
        let img = Layout::packed_image(3, 2, 2);
        assert_eq!(img.blocks(), 1);
        assert_eq!(img.channel_offset(2, 1, 1), (2 * 4 + 2) * 3 + 2);
        assert_eq!(img.len(), 48);
    }
}
