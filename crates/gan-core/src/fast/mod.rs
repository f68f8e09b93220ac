//! The fast CPU layers: convolutions as im2col + matrix products, fused batch norm and
//! activations, weight gradients written in place, and the kernels under them. On other
//! devices the same layers fall back to candle's ops.

pub mod alloc;
mod direct;
mod expf;
pub mod grads;
pub(crate) mod kernels;
pub mod layers;
mod moments;
pub mod nn;
pub mod ops;
mod packed;
mod tanhf;
mod twin;

/// Floating-point operations (a multiply and an add per term) of every matrix product
/// the fast CPU ops have run in this process, convolutions' included. For benchmarks:
/// the products are most of a step's arithmetic, so their count over the machine's peak
/// rate of fused multiply-adds bounds how fast any implementation of the same step can
/// run (`cargo xtask bench` prints that bound beside each ratio).
pub fn product_flops() -> u64 {
    kernels::PRODUCT_FLOPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `f` on one of rayon's worker threads, this thread waiting (or here, if it is one
/// already), carrying this thread's frozen flag and inference section. From a worker,
/// each parallel op runs its first part on the calling thread and hands the rest to the
/// others; from any other thread every parallel op, even one of a single part, is handed
/// to the pool and waited for: two thread switches per op, which for a generator's
/// dozens of small ops a batch were about a fifth of an MLP generation's time.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let frozen = layers::is_frozen();
    let prepared = layers::prepared_store();
    rayon::scope(|_| {
        let _restore = layers::with_prepared(prepared);
        layers::with_frozen(frozen, f)
    })
}

/// Runs `f` on one of rayon's workers, with this thread's frozen flag and inference
/// section (as [`on_worker`]), while the pool's other workers
/// stay awake, taking any work the parallel ops hand out and spinning between them,
/// instead of going to sleep once they find none.
///
/// A step of training is hundreds of parallel ops with short serial stretches between
/// them (candle's graph bookkeeping, its small element-wise ops). rayon's idle workers
/// sleep after a few dozen rounds of finding no work, and each op then starts on one
/// thread while the others are woken; on a 2-vCPU virtual machine a waking vCPU is
/// slow, and a worker slept 11% of VAE-GAN's step at batch 64. Awake, the workers cut
/// 2-9% from the step of every model of the registry at batch 64 (VAE-GAN 28.7 -> 26.2
/// ms, two threads, docs/BENCHMARKS.md); OpenMP, under PyTorch, spins the same way.
///
/// The spinning stops when `f` returns or panics. With `GAN_WAIT_POLICY=passive` (as
/// OpenMP's `OMP_WAIT_POLICY`: a machine shared with other work) the workers sleep as
/// usual.
pub fn with_workers_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    if wait_passively() {
        return on_worker(f);
    }
    let frozen = layers::is_frozen();
    let prepared = layers::prepared_store();
    let stop = AtomicBool::new(false);
    let stop = &stop;
    rayon::scope(|s| {
        for _ in 1..rayon::current_num_threads() {
            s.spawn(move |_| {
                while !stop.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        // Set even if `f` panics: the scope waits for the spinners before it unwinds.
        let _stop = Stop(stop);
        let _restore = layers::with_prepared(prepared);
        layers::with_frozen(frozen, f)
    })
}

/// Whether `GAN_WAIT_POLICY` asks idle workers to sleep ([`with_workers_awake`]).
fn wait_passively() -> bool {
    static PASSIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PASSIVE.get_or_init(|| {
        std::env::var("GAN_WAIT_POLICY").is_ok_and(|v| v.eq_ignore_ascii_case("passive"))
    })
}

/// Runs `f` as if on a fresh thread: no layer frozen ([`layers::frozen`]) or preparing its
/// weights ([`layers::inference`]) and no gradient collector active
/// ([`grads::Collector::backward`]), the caller's state restored after.
///
/// All three are thread-local, and rayon runs other work on a thread while it waits: a
/// worker waiting inside one trainer's frozen forward pass can pick up another trainer's
/// whole step (several trainers in one process, as in a sweep or a test binary), which would
/// then see the first one's weights frozen. Code that runs a unit of training as a rayon
/// job wraps it in this.
pub fn isolated<R>(f: impl FnOnce() -> R) -> R {
    let _restore = layers::with_prepared(None);
    layers::with_frozen(false, || grads::without_collector(f))
}

/// Runs `f(start, len)` on consecutive groups of `n` rows (at least `min_rows` each) over
/// rayon's threads and returns the groups' results in order; a single group (one
/// thread and a small batch, or too few rows) runs here. Each group sees this thread's
/// frozen flag and inference section, so that its layers compute as they would here,
/// and no gradient collector: not for use inside a backward pass.
///
/// For work whose rows never meet, such as a search per image, where splitting the batch
/// replaces the dozens of small parallel ops of every step (each a wake-up of the other
/// threads) by one split per step. No group holds more than `2 min_rows` rows (large
/// batches: several groups a thread). The groups depend only on `n`, `min_rows` and the
/// thread count, so runs stay deterministic; whether a group's rows get the whole
/// batch's bits depends on the shapes (gemm may block a long sum differently for fewer
/// rows): for the energy model's searches they do (`dpredict`), for a 96-row product
/// over 1,568 numbers they did not.
pub fn par_rows<T: Send>(
    n: usize,
    min_rows: usize,
    f: impl Fn(usize, usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    use rayon::prelude::*;
    // Groups of at most twice `min_rows`, several to a thread in large batches:
    // each group's activations then stay in a core's cache (the energy model at batch
    // 256, groups of 64 rows instead of 128: 0.92x the time on one thread, 0.96x on two).
    let min_rows = min_rows.max(1);
    let groups = rayon::current_num_threads()
        .min(n / min_rows)
        .max(n.div_ceil(2 * min_rows))
        .max(1);
    if groups == 1 {
        return Ok(vec![f(0, n)?]);
    }
    let frozen = layers::is_frozen();
    let prepared = layers::prepared_store();
    (0..groups)
        .into_par_iter()
        .map(|g| {
            let (start, end) = (g * n / groups, (g + 1) * n / groups);
            let _restore = layers::with_prepared(prepared.clone());
            layers::with_frozen(frozen, || {
                grads::without_collector(|| f(start, end - start))
            })
        })
        .collect()
}
