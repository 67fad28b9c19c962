//! Which SIMD flavour the element-wise kernels run with, chosen once at run time.
//!
//! The kernels are written once as plain loops (`#[inline(always)]`) and instantiated under
//! `#[target_feature]` wrappers, so LLVM vectorises the same code for AVX2+FMA or AVX-512.
//! `Portable` is the baseline build of the same loops (SSE2 on x86-64, NEON on aarch64,
//! where NEON is part of the baseline); tests run it against the dispatched flavour.

use std::sync::OnceLock;

/// A SIMD flavour of the element-wise kernels (GEMM dispatches on its own, in `gemm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// The target's baseline instruction set.
    Portable,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// x86-64 with AVX-512F (and AVX2/FMA).
    Avx512,
}

impl Isa {
    /// The best flavour this CPU supports, detected once.
    pub fn detect() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(detect_uncached)
    }

    /// `self` if this CPU runs it, else the best flavour it does run.
    pub fn supported(self) -> Isa {
        let best = Isa::detect();
        if self as u8 <= best as u8 {
            self
        } else {
            best
        }
    }

    /// Every flavour this CPU can run, best last (tests compare them all).
    pub fn all_supported() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| *isa as u8 <= best as u8)
            .collect()
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_uncached() -> Isa {
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
    {
        Isa::Avx512
    } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        Isa::Avx2
    } else {
        Isa::Portable
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_uncached() -> Isa {
    Isa::Portable
}

/// Defines `$vis fn $name(isa: Isa, args..)` that runs `$body` compiled for `isa`: the
/// body becomes an `#[inline(always)]` function, instantiated as is (portable) and inside
/// `#[target_feature]` copies for AVX2+FMA and AVX-512, so LLVM vectorises each copy for
/// its instruction set. An `isa` the CPU lacks is lowered to one it has (never UB).
macro_rules! isa_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name(isa: $crate::detect::cpu::isa::Isa, $($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) { body($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            fn avx512($($arg: $ty),*) { body($($arg),*) }
            match isa.supported() {
                // SAFETY: `supported` only returns flavours `Isa::detect` found on this CPU.
                #[cfg(target_arch = "x86_64")]
                $crate::detect::cpu::isa::Isa::Avx2 => unsafe { avx2($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::detect::cpu::isa::Isa::Avx512 => unsafe { avx512($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use isa_kernel;
