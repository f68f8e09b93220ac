//! Sample grids: a batch of images tiled into one PNG, the picture people look at first.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use image::ImageEncoder;

/// Maps images from the networks' [-1, 1] to [0, 1].
pub fn to_unit(images: &Tensor) -> candle_core::Result<Tensor> {
    images.affine(0.5, 0.5)?.clamp(0f32, 1f32)
}

/// Tiles `images` (`[N, C, H, W]`, C = 1 or 3, values in [-1, 1]) into rows of `cols`,
/// with a 2-pixel border, and encodes them as PNG bytes.
pub fn grid_png(images: &Tensor, cols: usize) -> Result<Vec<u8>> {
    let (n, c, h, w) = images
        .dims4()
        .context("a grid needs images shaped [N, C, H, W]")?;
    anyhow::ensure!(c == 1 || c == 3, "a grid needs 1 or 3 channels, got {c}");
    anyhow::ensure!(
        n > 0 && cols > 0,
        "a grid needs at least one image and one column"
    );
    let rows = n.div_ceil(cols);
    let pad = 2;
    let (gw, gh) = (cols * (w + pad) + pad, rows * (h + pad) + pad);
    let px = to_unit(images)?
        .affine(255.0, 0.0)?
        .round()?
        .to_dtype(DType::U8)?
        .to_device(&candle_core::Device::Cpu)?
        .flatten_all()?
        .to_vec1::<u8>()?;
    let mut buf = vec![40u8; gw * gh * 3];
    for i in 0..n {
        let (r, col) = (i / cols, i % cols);
        for y in 0..h {
            for x in 0..w {
                let (gx, gy) = (pad + col * (w + pad) + x, pad + r * (h + pad) + y);
                for ch in 0..3 {
                    let src = if c == 1 { 0 } else { ch };
                    buf[(gy * gw + gx) * 3 + ch] = px[((i * c + src) * h + y) * w + x];
                }
            }
        }
    }
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&buf, gw as u32, gh as u32, image::ExtendedColorType::Rgb8)
        .context("encoding PNG")?;
    Ok(out)
}

/// `a` and `b` (same shape `[N, C, H, W]`) in alternating rows of `cols`: originals over
/// their reconstructions, say.
pub fn interleave_rows(a: &Tensor, b: &Tensor, cols: usize) -> Result<Tensor> {
    anyhow::ensure!(
        a.dims() == b.dims(),
        "{:?} against {:?}",
        a.dims(),
        b.dims()
    );
    let n = a.dim(0)?;
    let cols = cols.clamp(1, n.max(1));
    let mut rows = Vec::new();
    for start in (0..n).step_by(cols) {
        let len = cols.min(n - start);
        rows.push(a.narrow(0, start, len)?);
        rows.push(b.narrow(0, start, len)?);
    }
    Ok(Tensor::cat(&rows, 0)?)
}

/// Writes a grid PNG atomically.
pub fn save_grid(path: &Path, images: &Tensor, cols: usize) -> Result<()> {
    crate::engine::checkpoint::atomic_write(path, &grid_png(images, cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn grid_has_expected_size_and_pixels() {
        // Two 3x3 images: all black (-1) and all white (+1), one row.
        let black = Tensor::full(-1f32, (1, 1, 3, 3), &Device::Cpu).unwrap();
        let white = Tensor::full(1f32, (1, 1, 3, 3), &Device::Cpu).unwrap();
        let imgs = Tensor::cat(&[black, white], 0).unwrap();
        let png = grid_png(&imgs, 2).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (2 * 5 + 2, 5 + 2));
        assert_eq!(img.get_pixel(2, 2).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(7, 2).0, [255, 255, 255]);
        assert!(grid_png(&Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(), 1).is_err());
    }
}
