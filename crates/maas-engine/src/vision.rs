//! Images in, tensors out: decode (JPEG, PNG, WebP), resize, centre-crop, channel order,
//! scaling and mean/std, in the layout the model was trained with. Sizes are read from the
//! header first, so a decompression bomb is refused before a pixel is decoded.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{ImageFormat, ImageReader, Limits, RgbImage};

use crate::{EngineError, Tensor, TensorData};

/// Largest image accepted, in pixels (about 8000×6000).
pub const MAX_IMAGE_PIXELS: u64 = 50_000_000;

/// How the image is resized before cropping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resize {
    /// Kept as decoded.
    None,
    /// To exactly this width and height (the aspect ratio is not kept).
    Exact(u32, u32),
    /// So the shorter side is this long, keeping the aspect ratio.
    Shorter(u32),
}

/// The resampling filter of the resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Nearest neighbour.
    Nearest,
    /// Linear (a triangle filter widened when shrinking, as PIL's BILINEAR).
    Bilinear,
    /// Cubic (Catmull-Rom).
    Bicubic,
    /// Lanczos with a window of 3.
    Lanczos,
}

/// Order of the colour channels the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (Caffe models).
    Bgr,
}

/// Where the channel axis goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[N, H, W, C]` (TensorFlow, Caffe exports).
    Nhwc,
    /// `[N, C, H, W]` (PyTorch exports).
    Nchw,
}

/// A model's image preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePreprocess {
    /// Resize first.
    pub resize: Resize,
    /// Then cut the centre `(width, height)`, if set.
    pub crop: Option<(u32, u32)>,
    /// Resampling filter.
    pub filter: Filter,
    /// Channel order.
    pub channels: Channels,
    /// Tensor layout.
    pub layout: Layout,
    /// Pixels 0–255 are scaled to 0–`pixel_range` (255 keeps them, 1 gives 0–1)…
    pub pixel_range: f32,
    /// …then `(x - mean) / std` per channel, in the model's channel order.
    pub mean: [f32; 3],
    /// See `mean`.
    pub std: [f32; 3],
}

impl ImagePreprocess {
    /// Width and height of the tensor produced, if fixed by the settings.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        match (self.crop, self.resize) {
            (Some(c), _) => Some(c),
            (None, Resize::Exact(w, h)) => Some((w, h)),
            _ => None,
        }
    }

    /// The tensor shape for one image of `width`×`height`.
    pub fn shape(&self, width: u32, height: u32) -> Vec<usize> {
        let (w, h) = (width as usize, height as usize);
        match self.layout {
            Layout::Nhwc => vec![1, h, w, 3],
            Layout::Nchw => vec![1, 3, h, w],
        }
    }
}

fn invalid(m: impl Into<String>) -> EngineError {
    EngineError::InvalidRequest(m.into())
}

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, EngineError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| invalid(format!("cannot read the image: {e}")))?;
    match reader.format() {
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => Ok(reader),
        Some(other) => Err(invalid(format!(
            "{other:?} images are not accepted; send JPEG, PNG or WebP"
        ))),
        None => Err(invalid("the file is not an image (JPEG, PNG or WebP)")),
    }
}

/// Decodes an image, refusing one larger than `MAX_IMAGE_PIXELS` by its header alone.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, EngineError> {
    let (width, height) = reader(bytes)?
        .into_dimensions()
        .map_err(|e| invalid(format!("cannot read the image header: {e}")))?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_IMAGE_PIXELS || width == 0 || height == 0 {
        return Err(invalid(format!(
            "the image is {width}×{height} pixels; at most {MAX_IMAGE_PIXELS} pixels are accepted"
        )));
    }
    let mut reader = reader(bytes)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // Decoded RGBA at 16 bits per channel, with room for the decoder's own buffers.
    limits.max_alloc = Some(pixels * 8 * 2);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| invalid(format!("cannot decode the image: {e}")))?;
    Ok(image.to_rgb8())
}

fn filter(f: Filter) -> FilterType {
    match f {
        Filter::Nearest => FilterType::Nearest,
        Filter::Bilinear => FilterType::Triangle,
        Filter::Bicubic => FilterType::CatmullRom,
        Filter::Lanczos => FilterType::Lanczos3,
    }
}

/// Resizes and crops a decoded image as `p` says.
pub fn prepare(image: RgbImage, p: &ImagePreprocess) -> Result<RgbImage, EngineError> {
    let (w, h) = image.dimensions();
    let target = match p.resize {
        Resize::None => None,
        Resize::Exact(tw, th) => Some((tw, th)),
        Resize::Shorter(s) => {
            let scale = f64::from(s) / f64::from(w.min(h));
            let scaled = |d: u32| ((f64::from(d) * scale).round() as u32).max(1);
            Some((scaled(w), scaled(h)))
        }
    };
    let image = match target {
        Some((tw, th)) if (tw, th) != (w, h) => {
            image::imageops::resize(&image, tw, th, filter(p.filter))
        }
        _ => image,
    };
    let Some((cw, ch)) = p.crop else {
        return Ok(image);
    };
    let (w, h) = image.dimensions();
    if cw > w || ch > h {
        return Err(invalid(format!(
            "the image is {w}×{h} after resizing, smaller than the {cw}×{ch} crop"
        )));
    }
    Ok(image::imageops::crop_imm(&image, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image())
}

/// The model input for one image: `[1, H, W, 3]` or `[1, 3, H, W]`, FP32.
pub fn to_tensor(name: &str, image: &RgbImage, p: &ImagePreprocess) -> Result<Tensor, EngineError> {
    let (w, h) = image.dimensions();
    let plane = (w as usize) * (h as usize);
    let mut data = vec![0f32; plane * 3];
    let scale = p.pixel_range / 255.0;
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            // Channel c of the model's order, taken from the RGB pixel.
            let source = match p.channels {
                Channels::Rgb => c,
                Channels::Bgr => 2 - c,
            };
            let x = (f32::from(pixel.0[source]) * scale - p.mean[c]) / p.std[c];
            let at = match p.layout {
                Layout::Nhwc => i * 3 + c,
                Layout::Nchw => c * plane + i,
            };
            data[at] = x;
        }
    }
    Tensor::new(name, p.shape(w, h), TensorData::F32(data))
}

/// Decodes, prepares and converts one image.
pub fn image_tensor(name: &str, bytes: &[u8], p: &ImagePreprocess) -> Result<Tensor, EngineError> {
    let image = prepare(decode(bytes)?, p)?;
    to_tensor(name, &image, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, pixel: [u8; 3]) -> Vec<u8> {
        let image = RgbImage::from_pixel(width, height, image::Rgb(pixel));
        let mut out = Cursor::new(vec![]);
        image
            .write_to(&mut out, ImageFormat::Png)
            .unwrap_or_else(|e| panic!("{e}"));
        out.into_inner()
    }

    fn caffe() -> ImagePreprocess {
        ImagePreprocess {
            resize: Resize::Exact(8, 8),
            crop: Some((4, 4)),
            filter: Filter::Bilinear,
            channels: Channels::Bgr,
            layout: Layout::Nhwc,
            pixel_range: 255.0,
            mean: [104.0, 117.0, 123.0],
            std: [1.0, 1.0, 1.0],
        }
    }

    #[test]
    fn channels_are_reordered_and_normalised() {
        let t = image_tensor("x", &png(10, 6, [200, 100, 50]), &caffe()).unwrap();
        assert_eq!(t.shape, vec![1, 4, 4, 3]);
        let TensorData::F32(v) = &t.data else {
            panic!("not FP32")
        };
        // BGR minus the Caffe means.
        assert_eq!(&v[..3], &[50.0 - 104.0, 100.0 - 117.0, 200.0 - 123.0]);

        let torch = ImagePreprocess {
            resize: Resize::Shorter(4),
            crop: Some((4, 4)),
            channels: Channels::Rgb,
            layout: Layout::Nchw,
            pixel_range: 1.0,
            mean: [0.5, 0.5, 0.5],
            std: [0.5, 0.5, 0.5],
            ..caffe()
        };
        let t = image_tensor("x", &png(12, 6, [255, 0, 255]), &torch).unwrap();
        assert_eq!(t.shape, vec![1, 3, 4, 4]);
        let TensorData::F32(v) = &t.data else {
            panic!("not FP32")
        };
        assert_eq!((v[0], v[16], v[32]), (1.0, -1.0, 1.0));
    }

    /// CRC-32 (IEEE), as PNG chunks carry it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for b in bytes {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn a_decompression_bomb_is_refused_by_its_header() {
        // A 20000×20000 PNG header (with a valid checksum) and a 1×1 image's data behind it:
        // decoding it would allocate over a gigabyte; only the header is read.
        let mut bomb = png(1, 1, [0, 0, 0]);
        bomb[16..20].copy_from_slice(&20000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&20000u32.to_be_bytes());
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        let err = decode(&bomb).unwrap_err().to_string();
        assert!(err.contains("20000×20000"), "{err}");
    }

    #[test]
    fn non_images_and_too_small_images_are_named() {
        let err = decode(b"hello, I am text").unwrap_err().to_string();
        assert_eq!(err, "the file is not an image (JPEG, PNG or WebP)");
        let mut p = caffe();
        p.resize = Resize::None;
        let err = image_tensor("x", &png(3, 3, [0, 0, 0]), &p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("smaller than the 4×4 crop"), "{err}");
    }
}
