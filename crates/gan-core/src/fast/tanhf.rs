//! `tanhf` over slices, bit for bit the platform's `f32::tanh`, eight or sixteen lanes at
//! a time.
//!
//! The exact `tanh` of training (`ops::tanh_exact`, candle's bits) called libm per
//! element: 7% of some models' training steps. glibc's `tanhf` up to 2.40 is fdlibm's:
//! `tanh(x) = 1 - 2/(expm1(2|x|) + 2)` for |x| >= 1, `-t/(t + 2)` with
//! `t = expm1(-2|x|)` below, and `expm1f` an argument reduction `k ln2 + r`, a rational
//! approximation in `r` and a reconstruction that depends on `k`, all in single
//! precision with no fused operations on x86-64 (no FMA variant of either there). The
//! same operations in the same order give the same floats: here every branch the
//! finite inputs can take is computed in every lane and the lane's own picked by
//! selects, so that the compiler vectorises the block; NaNs and infinities go to libm
//! (`tanh_exact` forward over [64, 1, 28, 28] on one thread: 0.45 -> 0.052 ms).
//!
//! Whether the platform's `tanhf` is that one is checked, not assumed: the first call
//! compares both on a few thousand inputs, and any difference (another libm, glibc 2.41's
//! correctly rounded `tanhf`) sends every call to libm from then on.

use std::sync::OnceLock;

use super::twin::{self, Twin};

/// fdlibm's `expm1f` constants: `ln2` split so that `k ln2_hi` is exact, its inverse,
/// and the scaled coefficients of the rational approximation.
const LN2_HI: f32 = f32::from_bits(0x3f31_7180);
const LN2_LO: f32 = f32::from_bits(0x3717_f7d1);
const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
const Q: [f32; 5] = [
    f32::from_bits(0xbd08_8889),
    f32::from_bits(0x3ad0_0d01),
    f32::from_bits(0xb8a6_70cd),
    f32::from_bits(0x3686_7e54),
    f32::from_bits(0xb457_edbb),
];

/// Bits of |x| from which `tanhf` takes `expm1(2|x|)` (|x| >= 1), from which it returns
/// ±1 (|x| >= 22), and below which it returns `x (1 + x)` (|x| < 2^-55).
const ONE: u32 = 0x3f80_0000;
const SATURATED: u32 = 0x41b0_0000;
const TINY: u32 = 0x2400_0000;
/// Bits of |t| (`expm1f`'s argument) above which it reduces by `k ln2` (|t| > ln2 / 2),
/// below which `k` is ±1 (|t| < 1.5 ln2), and below which it returns `t` (|t| < 2^-25).
const HALF_LN2: u32 = 0x3eb1_7218;
const ONE_AND_HALF_LN2: u32 = 0x3f85_1592;
const EXPM1_TINY: u32 = 0x3300_0000;
/// 1.5 * 2^23: adding it to an integer below 2^22 in magnitude puts it in the low bits.
const ROUND: f32 = 12_582_912.0;

/// Whether `x` takes the vectorised path: every finite float does.
#[inline(always)]
fn plain(x: f32) -> bool {
    x.to_bits() & 0x7fff_ffff < 0x7f80_0000
}

/// `2^k y`, for the `y` near 1 of `expm1f`'s reconstruction: `k` added to the exponent.
#[inline(always)]
fn scale(y: f32, k: i32) -> f32 {
    f32::from_bits((y.to_bits() as i32).wrapping_add(k << 23) as u32)
}

/// glibc's `__expm1f` for the `t` that `tanhf` passes it (`2|x|` for 1 <= |x| < 22,
/// `-2|x|` for 2^-55 <= |x| < 1), operation for operation, each branch's result computed
/// and the taken one selected.
#[inline(always)]
fn expm1_plain(t: f32) -> f32 {
    let ht = t.to_bits() & 0x7fff_ffff;
    // k = round(t / ln2) as glibc takes it, t/ln2 ± 1/2 truncated, then -1 below
    // 1.5 ln2 (t is negative there: positive t are at least 2) and 0 below ln2 / 2. The
    // integer is read off the float's bits (exact below 2^22, and the larger k of the
    // |x| >= 22 that `tanhf` answers itself are not used): `as i32`, which saturates,
    // went through the lanes one by one.
    let half = 0.5f32.copysign(t);
    let kf = (INV_LN2 * t + half).trunc();
    let kf = if ht < ONE_AND_HALF_LN2 { -1.0 } else { kf };
    let kf = if ht > HALF_LN2 { kf } else { 0.0 };
    let k = ((kf + ROUND).to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    // For k = ±1 glibc writes `t ∓ ln2_hi` and `±ln2_lo`: the same floats; for k = 0
    // these give r = t and c = 0.
    let hi = t - kf * LN2_HI;
    let lo = kf * LN2_LO;
    let r = hi - lo;
    let c = (hi - r) - lo;

    let hfx = 0.5 * r;
    let hxs = r * hfx;
    let r1 = 1.0 + hxs * (Q[0] + hxs * (Q[1] + hxs * (Q[2] + hxs * (Q[3] + hxs * Q[4]))));
    let u = 3.0 - r1 * hfx;
    let e = hxs * ((r1 - u) / (6.0 - r * u));
    let k0 = r - (r * e - hxs);

    let e = r * (e - c) - c;
    let e = e - hxs;
    let k_minus_1 = 0.5 * (r - e) - 0.5;
    // glibc's three reconstructions of `2^k (1 + r + ...) - 1` for the other k: the -1
    // after the scaling (`k <= -2` or `k > 56`), through `1 - 2^-k` (`k < 23`), through
    // `2^-k` (the rest).
    let far = k <= -2 || k > 56;
    let p = f32::from_bits((0x7f_i32.wrapping_sub(k) << 23) as u32);
    let y_far = 1.0 - (e - r);
    let y_near = (1.0 - p) - (e - r);
    let y_large = (r - (e + p)) + 1.0;
    let y = if far {
        y_far
    } else if k < 23 {
        y_near
    } else {
        y_large
    };
    let y = scale(y, k);
    let y = if far { y - 1.0 } else { y };

    let v = match k {
        0 => k0,
        -1 => k_minus_1,
        _ => y,
    };
    if ht < EXPM1_TINY {
        t
    } else {
        v
    }
}

/// glibc's `__tanhf` for a finite `x`, operation for operation.
#[inline(always)]
fn tanh_plain(x: f32) -> f32 {
    let ix = x.to_bits() & 0x7fff_ffff;
    let ax = f32::from_bits(ix);
    let above_one = ix >= ONE;
    let t = expm1_plain(if above_one { 2.0 * ax } else { -2.0 * ax });
    // `1 - 2/(t + 2)` or `-t/(t + 2)`, one division: its numerator is `min(|t|, 2)` (t is
    // above 6 or negative) and the second choice is by `t`'s sign. Either choice made by
    // `above_one` again let the compiler compute both quotients, or all of
    // `expm1_plain` once for each of `t`'s two values: twice the divisions.
    let q = t.abs().min(2.0) / (t + 2.0);
    let z = if t > 0.0 { 1.0 - q } else { q };
    // glibc's `1 - 1e-30`, which rounds to 1.
    let z = if ix >= SATURATED { 1.0 } else { z };
    let z = if x.is_sign_negative() { -z } else { z };
    // Zeros included: `x (1 + x)` is `x` for them.
    if ix < TINY {
        x * (1.0 + x)
    } else {
        z
    }
}

/// Lanes handled as one block: a block with a NaN or infinity goes to libm whole, so
/// that the rest stays branch-free and vectorises.
const LANES: usize = 8;

#[inline(always)]
fn tanh_blocks<const N: usize>(x: &[f32], out: &mut [f32]) {
    twin::blocks::<N>(x, out, plain, tanh_plain, f32::tanh)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn tanh_avx2(x: &[f32], out: &mut [f32]) {
    tanh_blocks::<LANES>(x, out)
}

/// Sixteen lanes a block, one register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2")]
fn tanh_avx512(x: &[f32], out: &mut [f32]) {
    tanh_blocks::<{ 2 * LANES }>(x, out)
}

/// libm's `tanhf` and the kernels.
static TWIN: Twin = Twin {
    libm: f32::tanh,
    #[cfg(target_arch = "x86_64")]
    avx2: (tanh_avx2, false),
    #[cfg(target_arch = "x86_64")]
    avx512: tanh_avx512,
    probes,
    chosen: OnceLock::new(),
};

/// Inputs the first call checks: a sweep of [-23, 23], one of small magnitudes, and
/// the edges of each branch.
fn probes() -> Vec<f32> {
    let mut v: Vec<f32> = (0..4096)
        .map(|i| -23.0 + 46.0 * i as f32 / 4095.0)
        .collect();
    v.extend((0..1024).map(|i| f32::from_bits(0x2000_0000 + i * 0x0010_0001)));
    v.extend((0..1024).map(|i| -f32::from_bits(0x3e00_0000 + i * 0x0000_4001)));
    // Each threshold of `tanhf`'s, and of `expm1f`'s on `2|x|`, with its neighbours.
    let edges = [ONE, SATURATED, TINY]
        .into_iter()
        .chain([HALF_LN2, ONE_AND_HALF_LN2, EXPM1_TINY].map(|b| b - 0x0080_0000));
    for b in edges.flat_map(|b| b - 2..=b + 2) {
        v.extend([f32::from_bits(b), -f32::from_bits(b)]);
    }
    v.extend([0.0, -0.0, 1e-40, -1e-40, 9.0, -9.0, 19.6, -19.6]);
    v.extend([
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
    ]);
    let n = v.len().next_multiple_of(2 * LANES);
    v.resize(n, 0.5);
    v
}

/// `out[i] = x[i].tanh()`, bit for bit, vectorised where the platform's `tanhf` is known.
pub(crate) fn tanh_into(x: &[f32], out: &mut [f32]) {
    TWIN.apply(x, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this machine should have fdlibm's `tanhf`, which the vectorised path must
    /// then reproduce: x86-64 Linux with glibc before 2.41 (whose `tanhf` is CORE-MATH's)
    /// and a CPU with AVX2.
    fn expected_fast() -> bool {
        #[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
        {
            extern "C" {
                fn gnu_get_libc_version() -> *const std::ffi::c_char;
            }
            // SAFETY: glibc returns a static, NUL-terminated string such as "2.36".
            let version = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
            let mut parts = version.to_str().unwrap_or("").split('.');
            let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
            let fdlibm = matches!((next(), next()), (Some(2), Some(minor)) if minor < 41);
            fdlibm && is_x86_feature_detected!("avx2")
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
        {
            false
        }
    }

    fn assert_libms(x: &[f32], out: &[f32]) {
        for (v, o) in x.iter().zip(out) {
            let want = v.tanh();
            assert!(
                o.to_bits() == want.to_bits() || (o.is_nan() && want.is_nan()),
                "tanh({v:e}) = {o:e}, libm {want:e}"
            );
        }
    }

    #[test]
    fn gives_libms_bits_on_a_million_inputs_and_every_special_one() {
        // Every 4,093rd bit pattern of all 2^32: all exponents, both signs, NaNs.
        let mut x: Vec<f32> = (0..1_049_600u64)
            .map(|i| f32::from_bits((i * 4093 % (1 << 32)) as u32))
            .collect();
        x.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0]);
        x.extend((0..5_000).map(|i| -25.0 + 0.01 * i as f32));
        let mut out = vec![0.0; x.len()];
        tanh_into(&x, &mut out);
        assert_libms(&x, &out);
        eprintln!("tanhf path: {:?}", TWIN.path());
    }

    #[test]
    fn the_vectorised_path_is_glibcs_and_is_taken() {
        if !expected_fast() {
            eprintln!("skipped: this platform's tanhf is not glibc's fdlibm one");
            return;
        }
        // A probe that disagreed would have sent every call to libm, hiding the error,
        // and a wrong AVX-512 kernel would fall back to the AVX2 one unseen.
        assert_eq!(
            Some(TWIN.path()),
            TWIN.kernels().first().copied(),
            "the widest kernel disagreed with glibc's tanhf"
        );
        // A block test that sent finite floats to libm would give libm's bits, slowly.
        let finite = (0..1_000_000u64).map(|i| f32::from_bits((i * 0x1fe1 % 0x7f80_0000) as u32));
        assert!(finite.flat_map(|v| [v, -v]).all(plain));
        assert!(![f32::NAN, f32::INFINITY, f32::NEG_INFINITY]
            .into_iter()
            .any(plain));
        // tanh_plain itself (not the dispatch), over [1/2, 2), where `expm1f` takes its
        // k = 0, -1, -2 and positive k branches.
        for i in 0..100_000u32 {
            let v = f32::from_bits(0x3f00_0000 + i * 167) * if i % 2 == 0 { 1.0 } else { -1.0 };
            assert_eq!(tanh_plain(v).to_bits(), v.tanh().to_bits(), "tanh({v:e})");
        }
    }

    #[test]
    fn every_finite_float_in_every_kernel() {
        // A constant off in its last bits, or one operation in another order, moves only
        // a few of the four billion results, so all of them are checked, in each kernel
        // itself (not through the dispatch, which hides a kernel the probes reject).
        if !expected_fast() {
            eprintln!("skipped: this platform's tanhf is not glibc's fdlibm one");
            return;
        }
        use rayon::prelude::*;
        let kernels = TWIN.kernels();
        // Per chunk of a million floats, the count of wrong results and the first few.
        let (bad, examples) = [0u32, 0x8000_0000]
            .into_par_iter()
            .flat_map(|sign| {
                (0..0x7f80_0000u32)
                    .into_par_iter()
                    .step_by(1 << 20)
                    .map(move |start| (sign, start))
            })
            .map(|(sign, start)| {
                let x: Vec<f32> = (start..start + (1 << 20))
                    .map(|b| f32::from_bits(b | sign))
                    .collect();
                let want: Vec<u32> = x.iter().map(|v| v.tanh().to_bits()).collect();
                let mut out = vec![0.0; x.len()];
                let (mut bad, mut examples) = (0u64, vec![]);
                for &p in &kernels {
                    TWIN.run(p, &x, &mut out);
                    for i in 0..x.len() {
                        if out[i].to_bits() != want[i] || !plain(x[i]) {
                            bad += 1;
                            if examples.len() < 8 {
                                examples.push((p, x[i].to_bits()));
                            }
                        }
                    }
                }
                (bad, examples)
            })
            .reduce(
                || (0, vec![]),
                |(n, mut e), (m, f)| {
                    e.extend(f);
                    e.truncate(8);
                    (n + m, e)
                },
            );
        assert_eq!(bad, 0, "results differ, such as {examples:x?}");
    }
}
