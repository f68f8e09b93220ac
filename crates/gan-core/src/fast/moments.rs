//! Batch norm's per-plane sums, eight planes side by side in AVX2.
//!
//! Each plane's sum must run element by element in order, so that the statistics keep
//! their bits whatever the machine. The plain loop does that one element of each plane
//! at a time, in scalar code: about 0.8 elements a cycle on Zen 3, well below what the
//! memory delivers. Here four elements of four planes are loaded at once and transposed
//! in registers, so that each vector holds one element of four planes; two such groups
//! give two independent chains of additions, and each lane's additions keep their order.
//! The arithmetic is the plain loop's, operation for operation (no fused multiply-add).

/// Planes summed side by side.
pub(crate) const PLANES: usize = 8;

/// Whether this CPU runs the kernels.
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// For each of the eight planes of `p` values (plane `q` at `x[q p..]`), the `f64` sum
/// from -0.0 in element order of `v`, or with `mean` of `(v - mean[q])^2`.
///
/// # Safety
/// [`available`] must hold.
pub(crate) unsafe fn sums(x: &[f32], p: usize, mean: Option<&[f64; PLANES]>) -> [f64; PLANES] {
    assert!(x.len() >= PLANES * p, "plane sums: {} < 8 x {p}", x.len());
    #[cfg(target_arch = "x86_64")]
    {
        x86::sums(x, p, mean)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no AVX2 off x86-64 ({p}, {mean:?})")
}

/// For each of the eight planes of `g` and `x` (plane `q` at `[q p..]`) and its channel's
/// `mean[q]`: the `f32` sums from 0 in element order of `g` and of `g (x - mean[q])`.
///
/// # Safety
/// [`available`] must hold.
pub(crate) unsafe fn grad_sums(
    g: &[f32],
    x: &[f32],
    mean: &[f32; PLANES],
    p: usize,
) -> ([f32; PLANES], [f32; PLANES]) {
    assert!(
        g.len() >= PLANES * p && x.len() >= PLANES * p,
        "plane gradient sums: fewer than 8 x {p} values"
    );
    #[cfg(target_arch = "x86_64")]
    {
        x86::grad_sums(g, x, mean, p)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no AVX2 off x86-64 ({p}, {mean:?})")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::PLANES;
    use std::arch::x86_64::*;

    /// Elements `j..j + 4` of the four planes from `at` (`p` apart), as four vectors:
    /// vector `t` holds element `j + t` of planes 0..4.
    #[inline(always)]
    unsafe fn columns(at: *const f32, p: usize, j: usize) -> [__m128; 4] {
        let r0 = _mm_loadu_ps(at.add(j));
        let r1 = _mm_loadu_ps(at.add(p + j));
        let r2 = _mm_loadu_ps(at.add(2 * p + j));
        let r3 = _mm_loadu_ps(at.add(3 * p + j));
        let (t0, t1) = (_mm_unpacklo_ps(r0, r1), _mm_unpackhi_ps(r0, r1));
        let (t2, t3) = (_mm_unpacklo_ps(r2, r3), _mm_unpackhi_ps(r2, r3));
        [
            _mm_movelh_ps(t0, t2),
            _mm_movehl_ps(t2, t0),
            _mm_movelh_ps(t1, t3),
            _mm_movehl_ps(t3, t1),
        ]
    }

    /// [`super::sums`].
    ///
    /// # Safety
    /// AVX2 present, and `x` at least `8 p` long (the caller asserts it).
    // Element `t` of both halves in turn: the two chains interleave.
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sums(x: &[f32], p: usize, mean: Option<&[f64; PLANES]>) -> [f64; PLANES] {
        let at = x.as_ptr();
        let zero = [0.0f64; PLANES];
        let m = mean.unwrap_or(&zero);
        let means = [
            _mm256_loadu_pd(m.as_ptr()),
            _mm256_loadu_pd(m.as_ptr().add(4)),
        ];
        let mut acc = [_mm256_set1_pd(-0.0); 2];
        let mut j = 0;
        while j + 4 <= p {
            let cols = [columns(at, p, j), columns(at.add(4 * p), p, j)];
            for t in 0..4 {
                for h in 0..2 {
                    let v = _mm256_cvtps_pd(cols[h][t]);
                    let v = match mean {
                        Some(_) => {
                            let d = _mm256_sub_pd(v, means[h]);
                            _mm256_mul_pd(d, d)
                        }
                        None => v,
                    };
                    acc[h] = _mm256_add_pd(acc[h], v);
                }
            }
            j += 4;
        }
        let mut out = [0.0f64; PLANES];
        _mm256_storeu_pd(out.as_mut_ptr(), acc[0]);
        _mm256_storeu_pd(out.as_mut_ptr().add(4), acc[1]);
        for (q, o) in out.iter_mut().enumerate() {
            for &v in &x[q * p + j..(q + 1) * p] {
                let v = v as f64;
                *o += match mean {
                    Some(m) => (v - m[q]) * (v - m[q]),
                    None => v,
                };
            }
        }
        out
    }

    /// [`super::grad_sums`].
    ///
    /// # Safety
    /// AVX2 present, and `g` and `x` at least `8 p` long (the caller asserts it).
    #[allow(clippy::needless_range_loop)]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn grad_sums(
        g: &[f32],
        x: &[f32],
        mean: &[f32; PLANES],
        p: usize,
    ) -> ([f32; PLANES], [f32; PLANES]) {
        let (gp, xp) = (g.as_ptr(), x.as_ptr());
        let means = [
            _mm_loadu_ps(mean.as_ptr()),
            _mm_loadu_ps(mean.as_ptr().add(4)),
        ];
        let mut a = [_mm_setzero_ps(); 2];
        let mut b = [_mm_setzero_ps(); 2];
        let mut j = 0;
        while j + 4 <= p {
            let gs = [columns(gp, p, j), columns(gp.add(4 * p), p, j)];
            let xs = [columns(xp, p, j), columns(xp.add(4 * p), p, j)];
            for t in 0..4 {
                for h in 0..2 {
                    a[h] = _mm_add_ps(a[h], gs[h][t]);
                    let d = _mm_sub_ps(xs[h][t], means[h]);
                    b[h] = _mm_add_ps(b[h], _mm_mul_ps(gs[h][t], d));
                }
            }
            j += 4;
        }
        let (mut sa, mut sb) = ([0.0f32; PLANES], [0.0f32; PLANES]);
        for h in 0..2 {
            _mm_storeu_ps(sa.as_mut_ptr().add(4 * h), a[h]);
            _mm_storeu_ps(sb.as_mut_ptr().add(4 * h), b[h]);
        }
        for q in 0..PLANES {
            let tail = q * p + j..(q + 1) * p;
            for (&gv, &xv) in g[tail.clone()].iter().zip(&x[tail]) {
                sa[q] += gv;
                sb[q] += gv * (xv - mean[q]);
            }
        }
        (sa, sb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both kernels are the plain loops bit for bit, for planes of every remainder of 4
    /// (and none), with and without a mean, from slices longer than the eight planes.
    #[test]
    fn eight_planes_are_the_plain_loops_bit_for_bit() {
        if !available() {
            eprintln!("skipped: no AVX2 on this CPU");
            return;
        }
        use crate::fast::kernels::binades;
        for p in 0..=9 {
            let (x, g) = (
                binades(2 * p as u64 + 1, PLANES * p + 5),
                binades(2 * p as u64 + 2, PLANES * p + 5),
            );
            let mean64: [f64; PLANES] = std::array::from_fn(|q| q as f64 * 0.01 - 0.03);
            let mean32: [f32; PLANES] = std::array::from_fn(|q| q as f32 * 0.01 - 0.03);
            for mean in [None, Some(&mean64)] {
                let want: Vec<u64> = (0..PLANES)
                    .map(|q| {
                        let mut s = -0.0f64;
                        for &v in &x[q * p..(q + 1) * p] {
                            let v = v as f64;
                            s += match mean {
                                Some(m) => (v - m[q]) * (v - m[q]),
                                None => v,
                            };
                        }
                        s.to_bits()
                    })
                    .collect();
                // SAFETY: `available` holds.
                let got = unsafe { sums(&x, p, mean) }.map(f64::to_bits);
                assert_eq!(got.to_vec(), want, "sums, p {p}, mean {}", mean.is_some());
            }
            let (mut a, mut b) = ([0f32; PLANES], [0f32; PLANES]);
            for q in 0..PLANES {
                for j in q * p..(q + 1) * p {
                    a[q] += g[j];
                    b[q] += g[j] * (x[j] - mean32[q]);
                }
            }
            // SAFETY: `available` holds.
            let (ga, gb) = unsafe { grad_sums(&g, &x, &mean32, p) };
            assert_eq!(ga.map(f32::to_bits), a.map(f32::to_bits), "sum(g), p {p}");
            assert_eq!(
                gb.map(f32::to_bits),
                b.map(f32::to_bits),
                "sum(g (x - m)), p {p}"
            );
        }
    }
}
