//! The matrix products of the InfoGAN step at batch 64, three ways: one thread, the
//! `gemm` crate's own threading, and the split gan-core uses for products of few rows
//! (column blocks, one single-threaded product per thread). Shows why
//! `kernels::gemm_into` splits products with fewer than 512 rows, and the layouts of a
//! convolution's products (column matrix or patches; see `kernels::patches`).
//!
//! `cargo bench -p gan-core --bench gemm` (add `-- --reps N`).

use std::time::Instant;

use gemm::Parallelism;
use rayon::prelude::*;

/// `m x n x k`, and whether the left / right operand is read transposed.
struct Product {
    what: &'static str,
    m: usize,
    n: usize,
    k: usize,
    a_t: bool,
    b_t: bool,
}

/// `dst[m, n] = a * b` on columns `lo..lo + n` of a row-major destination of width `ld`.
///
/// # Safety
/// The pointers must cover the block: `a` (m x k), `b` from column `lo`, `dst` m x ld.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    p: &Product,
    dst: *mut f32,
    a: *const f32,
    b: *const f32,
    lo: usize,
    n: usize,
    par: Parallelism,
) {
    let (a_rs, a_cs) = if p.a_t { (1, p.m) } else { (p.k, 1) };
    let (b_rs, b_cs) = if p.b_t { (1, p.k) } else { (p.n, 1) };
    gemm::gemm(
        p.m,
        n,
        p.k,
        dst.add(lo),
        1,
        p.n as isize,
        false,
        a,
        a_cs as isize,
        a_rs as isize,
        b.add(lo * b_cs),
        b_cs as isize,
        b_rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}

fn main() {
    let mut reps = 15;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--reps" {
            reps = args.next().and_then(|v| v.parse().ok()).unwrap_or(reps);
        }
    }
    let threads = rayon::current_num_threads();
    let products = [
        (
            "G fc 1024->6272, forward x W^T",
            64,
            6272,
            1024,
            false,
            true,
        ),
        ("G fc, input gradient g W", 64, 1024, 6272, false, false),
        ("G fc, weight gradient g^T x", 6272, 1024, 64, true, false),
        (
            "D fc 6272->1024, forward x W^T",
            64,
            1024,
            6272,
            false,
            true,
        ),
        ("D fc, input gradient g W", 64, 6272, 1024, false, false),
        ("D fc, weight gradient g^T x", 1024, 6272, 64, true, false),
        (
            "D conv 64->128, forward W cols",
            128,
            3136,
            1024,
            false,
            false,
        ),
        (
            "D conv, weight gradient g cols^T",
            128,
            1024,
            3136,
            false,
            true,
        ),
        (
            "D conv, column gradient W^T g",
            1024,
            3136,
            128,
            true,
            false,
        ),
        ("3x3 64->64 fwd W cols", 64, 3136, 576, false, false),
        ("3x3 64->64 fwd colsT W^T", 3136, 64, 576, false, true),
        ("3x3 64->64 dW g cols^T", 64, 576, 3136, false, true),
        ("3x3 64->64 dW g colsT", 64, 576, 3136, false, false),
        ("1->64 fwd W cols", 64, 12544, 16, false, false),
        ("1->64 fwd colsT W^T", 12544, 64, 16, false, true),
        ("1->64 dW g cols^T", 64, 16, 12544, false, true),
        ("1->64 dW g colsT", 64, 16, 12544, false, false),
        ("64->128 fwd colsT W^T", 3136, 128, 1024, false, true),
        ("64->128 dW g colsT", 128, 1024, 3136, false, false),
        ("DANN conv2 fwd W cols", 48, 8192, 800, false, false),
        ("DANN conv2 fwd colsT W^T", 8192, 48, 800, false, true),
        ("DANN conv2 dW g cols^T", 48, 800, 8192, false, true),
        ("DANN conv2 dW g colsT", 48, 800, 8192, false, false),
        ("DANN conv2 dcols W^T g", 800, 8192, 48, true, false),
        ("DANN conv2 dcolsT gT W", 8192, 800, 48, false, false),
        ("DANN conv1 fwd W cols", 32, 73728, 75, false, false),
        ("DANN conv1 fwd colsT W^T", 73728, 32, 75, false, true),
        ("DANN conv1 dW g cols^T", 32, 75, 73728, false, true),
        ("DANN conv1 dW g colsT", 32, 75, 73728, false, false),
    ];
    println!("median of {reps} runs, ms; {threads} threads (rayon)");
    println!(
        "{:52} {:>9} {:>11} {:>11}",
        "product (m x n x k)", "1 thread", "gemm's own", "by columns"
    );
    for (what, m, n, k, a_t, b_t) in products {
        let p = Product {
            what,
            m,
            n,
            k,
            a_t,
            b_t,
        };
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 / 7.0 - 0.5).collect();
        let mut dst = vec![0f32; m * n];
        let dst = &mut dst;
        let (dp, ap, bp) = (
            dst.as_mut_ptr() as usize,
            a.as_ptr() as usize,
            b.as_ptr() as usize,
        );
        let run = |mode: usize| {
            let mut times: Vec<f64> = (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    // SAFETY: a, b and dst hold m*k, k*n and m*n elements; the blocks
                    // split dst's columns, so no two threads write one element.
                    unsafe {
                        let (d, a, b) = (dp as *mut f32, ap as *const f32, bp as *const f32);
                        match mode {
                            0 => block(&p, d, a, b, 0, n, Parallelism::None),
                            1 => block(&p, d, a, b, 0, n, Parallelism::Rayon(threads)),
                            _ => {
                                let step = n.div_ceil(threads);
                                (0..threads).into_par_iter().for_each(|i| {
                                    let lo = i * step;
                                    let (d, a, b) =
                                        (dp as *mut f32, ap as *const f32, bp as *const f32);
                                    if lo < n {
                                        block(&p, d, a, b, lo, step.min(n - lo), Parallelism::None)
                                    }
                                });
                            }
                        }
                    }
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            times[times.len() / 2]
        };
        let (one, own, cols) = (run(0), run(1), run(2));
        println!(
            "{:52} {:>9.2} {:>11.2} {:>11.2}",
            format!("{} ({m}x{n}x{k})", p.what),
            one,
            own,
            cols
        );
    }
}
