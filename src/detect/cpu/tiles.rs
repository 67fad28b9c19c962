//! The AVX-512 register tiles of the blocked direct convolution, one definition for every
//! arithmetic (f32 FMA, bf16 `vdpbf16ps`, int8 `vpdpbusd`): a tile computes
//! (TWO ? 2 : 1) output blocks × N (1..=12) pixels, accumulating over every input block,
//! kernel tap and input word, and hands each accumulator to the arithmetic's `finish`.
//!
//! [`register_tiles!`] expands, inside an arithmetic's `avx512` module, to `by_width` and
//! `tile_1` … `tile_12`, calling that module's own `#[inline(always)]` helpers:
//! - `start(t, block)` / `zero()`: an accumulator's first value (bias, or int8's
//!   zero-point correction) and an unused second block's;
//! - `words(t)`: input words per pixel and tap (f32: the tile's lanes; bf16: 8 pairs;
//!   int8: 4 quads);
//! - `load_weights(w)`: one block of weights for one input word;
//! - `broadcast(x)`: one input word to every lane;
//! - `dot(acc, x, w)`: the multiply-accumulate;
//! - `finish(t, block, pixel, acc)`: epilogue and store.
//!
//! Pixel indices are literals so every accumulator is a register from the start (an array
//! indexed by a loop variable was kept on the stack). `STEP` is the input words between
//! pixels as a constant (every broadcast's address a fixed offset), 0 to read `t.step` at
//! run time.

/// Defines `by_width::<TWO, STEP>(t, n)` and its twelve tiles for the tile type `$tile`,
/// compiled with the target features `$features`.
macro_rules! register_tiles {
    ($features:literal, $tile:ty) => {
        /// Calls the tile of width `n` (1..=12).
        ///
        /// # Safety
        /// The CPU has the target features; as the tiles.
        #[target_feature(enable = $features)]
        pub unsafe fn by_width<const TWO: bool, const STEP: usize>(t: &$tile, n: usize) {
            match n {
                1 => tile_1::<TWO, STEP>(t),
                2 => tile_2::<TWO, STEP>(t),
                3 => tile_3::<TWO, STEP>(t),
                4 => tile_4::<TWO, STEP>(t),
                5 => tile_5::<TWO, STEP>(t),
                6 => tile_6::<TWO, STEP>(t),
                7 => tile_7::<TWO, STEP>(t),
                8 => tile_8::<TWO, STEP>(t),
                9 => tile_9::<TWO, STEP>(t),
                10 => tile_10::<TWO, STEP>(t),
                11 => tile_11::<TWO, STEP>(t),
                _ => tile_12::<TWO, STEP>(t),
            }
        }
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_1, 1, [0]);
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_2, 2, [0, 1]);
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_3, 3, [0, 1, 2]);
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_4, 4, [0, 1, 2, 3]);
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_5, 5, [0, 1, 2, 3, 4]);
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_6, 6, [0, 1, 2, 3, 4, 5]);
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_7, 7, [0, 1, 2, 3, 4, 5, 6]);
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_8, 8, [0, 1, 2, 3, 4, 5, 6, 7]);
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_9, 9, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_10, 10, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_11, 11, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        $crate::detect::cpu::tiles::register_tiles!(@tile $features, $tile, tile_12, 12, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    };
    (@tile $features:literal, $tile:ty, $name:ident, $n:literal, [$($p:literal),*]) => {
        /// # Safety
        /// The CPU has the target features; the tile's pointers cover the extents its
        /// sizes imply.
        #[target_feature(enable = $features)]
        unsafe fn $name<const TWO: bool, const STEP: usize>(t: &$tile) {
            let step = if STEP == 0 { t.step } else { STEP };
            let mut a0 = [start(t, 0); $n];
            let mut a1 = [if TWO { start(t, 1) } else { zero() }; $n];
            let w_step = if TWO { 2 * LANES } else { LANES };
            let mut w = t.weights;
            for ib in 0..t.in_blocks {
                for ky in 0..t.kernel {
                    for kx in 0..t.kernel {
                        let src = t.src.add(ib * t.src_block + ky * t.src_row + kx * t.src_pixel);
                        for k in 0..words(t) {
                            let x0 = src.add(k);
                            let w0 = load_weights(w);
                            if TWO {
                                let w1 = load_weights(w.add(LANES));
                                $(
                                    let x = broadcast(x0.add($p * step));
                                    a0[$p] = dot(a0[$p], x, w0);
                                    a1[$p] = dot(a1[$p], x, w1);
                                )*
                            } else {
                                $(
                                    let x = broadcast(x0.add($p * step));
                                    a0[$p] = dot(a0[$p], x, w0);
                                )*
                            }
                            w = w.add(w_step);
                        }
                    }
                }
            }
            $( finish(t, 0, $p, a0[$p]); )*
            if TWO {
                $( finish(t, 1, $p, a1[$p]); )*
            }
        }
    };
}
pub(crate) use register_tiles;
