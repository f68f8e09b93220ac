//! Helpers shared by the integration tests of gan-core.
#![allow(dead_code)] // each test file uses some of these helpers

use candle_core::{Device, Tensor};

/// Deterministic values in [-1, 1) without an RNG crate.
pub fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Asserts `a` and `b` agree to `1e-4` of the larger of 1 and `b`'s largest magnitude.
pub fn close(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * scale,
            "{what}: element {i}: {x} vs {y} (scale {scale})"
        );
    }
}

/// `n` toy "digits" of three classes at random places with noise: 0 a horizontal bar,
/// 1 a vertical bar, 2 a hollow square. Images in [-1, 1].
pub fn toy_set(n: usize, seed: u64) -> (Tensor, Tensor, Vec<u8>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut px = vec![-1f32; n * 784];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 3) as u8;
        let (r0, c0) = (rng.random_range(3..14usize), rng.random_range(3..14usize));
        let img = &mut px[i * 784..(i + 1) * 784];
        let mut on = |r: usize, c: usize| img[r * 28 + c] = 1.0;
        match class {
            0 => (0..12).for_each(|k| on(r0 + 4, c0 + k)),
            1 => (0..12).for_each(|k| on(r0 + k, c0 + 4)),
            _ => (0..10).for_each(|k| {
                on(r0, c0 + k);
                on(r0 + 9, c0 + k);
                on(r0 + k, c0);
                on(r0 + k, c0 + 9);
            }),
        }
        for v in img.iter_mut() {
            *v = (*v + rng.random_range(-0.3..0.3f32)).clamp(-1.0, 1.0);
        }
        labels.push(class);
    }
    let x = Tensor::from_vec(px, (n, 1, 28, 28), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(
        labels.iter().map(|&l| u32::from(l)).collect::<Vec<_>>(),
        n,
        &Device::Cpu,
    )
    .unwrap();
    (x, y, labels)
}
