//! What the vectorised twins of libm's functions share ([`super::expf`],
//! [`super::tanhf`]): a kernel per instruction set, and the choice among them, made once
//! by comparing each with libm itself on probes, so that a kernel that differs anywhere
//! there (another libm, another glibc, a CPU without FMA) is never used.

use std::sync::OnceLock;

/// Where a twin's calls go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Path {
    Libm,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

/// A kernel over slices: a `#[target_feature]` function, unsafe to call without them.
#[cfg(target_arch = "x86_64")]
pub(super) type Kernel = unsafe fn(&[f32], &mut [f32]);

/// A libm function and its vectorised kernels.
pub(super) struct Twin {
    /// libm's function: the reference, and the path where no kernel agrees.
    pub libm: fn(f32) -> f32,
    /// The AVX2 kernel, and whether it needs FMA too.
    #[cfg(target_arch = "x86_64")]
    pub avx2: (Kernel, bool),
    /// The AVX-512 kernel (AVX-512F and VL besides what the AVX2 one needs).
    #[cfg(target_arch = "x86_64")]
    pub avx512: Kernel,
    /// The inputs the choice compares on: each branch's edges, specials, a sweep.
    pub probes: fn() -> Vec<f32>,
    /// The path chosen, on first use.
    pub chosen: OnceLock<Path>,
}

impl Twin {
    /// `out[i] = libm(x[i])` for each element, bit for bit, by the path chosen.
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        assert_eq!(x.len(), out.len(), "a libm twin's lengths differ");
        self.run(self.path(), x, out)
    }

    /// The widest kernel that gives libm's bits on every probe, chosen once.
    pub fn path(&self) -> Path {
        *self.chosen.get_or_init(|| self.choose())
    }

    /// `out[i] = libm(x[i])` by `path`.
    pub fn run(&self, path: Path, x: &[f32], out: &mut [f32]) {
        match path {
            Path::Libm => each(x, out, self.libm),
            // SAFETY: `kernels` offers these paths only where the CPU has the features.
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { (self.avx2.0)(x, out) },
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => unsafe { (self.avx512)(x, out) },
        }
    }

    /// The kernels this CPU can run, widest first.
    pub fn kernels(&self) -> Vec<Path> {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && (!self.avx2.1 || is_x86_feature_detected!("fma"));
            let wide =
                avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl");
            [(wide, Path::Avx512), (avx2, Path::Avx2)]
                .into_iter()
                .filter_map(|(usable, p)| usable.then_some(p))
                .collect()
        }
        #[cfg(not(target_arch = "x86_64"))]
        Vec::new()
    }

    /// The widest kernel that gives libm's bits on every probe; libm if none does.
    fn choose(&self) -> Path {
        let x = (self.probes)();
        let want: Vec<u32> = x.iter().map(|&v| (self.libm)(v).to_bits()).collect();
        let agrees = |p: Path| {
            let mut out = vec![0.0; x.len()];
            self.run(p, &x, &mut out);
            out.iter().map(|v| v.to_bits()).eq(want.iter().copied())
        };
        self.kernels()
            .into_iter()
            .find(|&p| agrees(p))
            .unwrap_or(Path::Libm)
    }
}

/// `straight` of each element of every block of `N` whose elements all take it (one test
/// of the whole block, not a branch a lane, so that the straight path vectorises), libm's
/// function of the others and of the tail.
#[inline(always)]
pub(super) fn blocks<const N: usize>(
    x: &[f32],
    out: &mut [f32],
    takes: impl Fn(f32) -> bool,
    straight: impl Fn(f32) -> f32,
    libm: impl Fn(f32) -> f32 + Copy,
) {
    let mut xs = x.chunks_exact(N);
    let mut os = out.chunks_exact_mut(N);
    for (xb, ob) in (&mut xs).zip(&mut os) {
        if xb.iter().fold(true, |all, &v| all & takes(v)) {
            for (o, &v) in ob.iter_mut().zip(xb) {
                *o = straight(v);
            }
        } else {
            each(xb, ob, libm);
        }
    }
    each(xs.remainder(), os.into_remainder(), libm);
}

/// `f` of each element, one call each.
#[inline(always)]
pub(super) fn each(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}
