//! Images as network inputs: one transform from an image file to pixels (decode, resize to a
//! square, grey or RGB, 0–1, channel-major) used by training and by serving alike, the choice of
//! that size and channel count from a dataset, and the random shifts and rotations that augment
//! training images.

use std::collections::{BTreeMap, HashMap};

use image::imageops::FilterType;
use image::ImageDecoder;
use maas_core::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How the images of a dataset become inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Side of the square every image is resized to; by default the images' own size when they
    /// all share one square size.
    #[serde(default)]
    pub size: Option<usize>,
    /// 1 (grey) or 3 (RGB); by default 1 when every image is grey.
    #[serde(default)]
    pub channels: Option<usize>,
}

/// Largest side an image is resized to for training.
pub const MAX_SIZE: usize = 256;

/// Most memory a dataset's decoded pixels may take (training holds them, as f32, for the run).
pub const MAX_PIXEL_BYTES: usize = 1 << 30;

/// The input of one image file: `channels × size × size` values in 0–1, channel-major (the
/// layout of a `[C, H, W]` tensor). Grey is the luma of the RGB pixel (ITU-R 601).
pub fn pixels(bytes: &[u8], channels: usize, size: usize) -> Result<Vec<f32>> {
    let rgb = maas_engine::vision::decode(bytes).map_err(|e| Error::invalid(e.to_string()))?;
    let side = size as u32;
    let rgb = if rgb.dimensions() == (side, side) {
        rgb
    } else {
        image::imageops::resize(&rgb, side, side, FilterType::Triangle)
    };
    let plane = size * size;
    let mut out = vec![0f32; channels * plane];
    for (i, p) in rgb.pixels().enumerate() {
        let [r, g, b] = p.0.map(|v| f32::from(v) / 255.0);
        if channels == 1 {
            out[i] = 0.299 * r + 0.587 * g + 0.114 * b;
        } else {
            out[i] = r;
            out[plane + i] = g;
            out[2 * plane + i] = b;
        }
    }
    Ok(out)
}

/// Size and channels of `files` (path → file) under `spec`, and every file's pixels. An error
/// names the first file that cannot be read, or says which setting to give when the images
/// disagree.
pub fn encode_all(
    files: &BTreeMap<String, Vec<u8>>,
    spec: &ImageSpec,
) -> Result<(usize, usize, HashMap<String, Vec<f32>>)> {
    let mut sides = BTreeMap::new();
    let mut grey = true;
    // Sizes and colour from the headers; pixels are decoded once, below.
    for (path, bytes) in files {
        let unreadable =
            |e: image::ImageError| Error::invalid(format!("image '{path}' cannot be decoded: {e}"));
        let decoder = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| unreadable(e.into()))?
            .into_decoder()
            .map_err(unreadable)?;
        sides.entry(decoder.dimensions()).or_insert(path);
        grey &= !decoder.color_type().has_color();
    }
    let size = match spec.size {
        Some(s) => s,
        None => match sides.keys().collect::<Vec<_>>().as_slice() {
            [(w, h)] if w == h && *w as usize <= MAX_SIZE => *w as usize,
            [(w, h)] => {
                return Err(Error::invalid(format!(
                    "the images are {w}x{h}; set image.size to the square side to resize them to (at most {MAX_SIZE})"
                )))
            }
            [] => return Err(Error::invalid("the dataset holds no images")),
            [(w1, h1), (w2, h2), ..] => {
                return Err(Error::invalid(format!(
                    "the images differ in size ('{}' is {w1}x{h1}, '{}' is {w2}x{h2}); set image.size to resize them all to one square",
                    sides[&(*w1, *h1)], sides[&(*w2, *h2)]
                )))
            }
        },
    };
    let channels = spec.channels.unwrap_or(if grey { 1 } else { 3 });
    check(size, channels)?;
    let bytes = files.len() * channels * size * size * std::mem::size_of::<f32>();
    if bytes > MAX_PIXEL_BYTES {
        return Err(Error::invalid(format!(
            "{} images of {channels}x{size}x{size} take {} MiB as inputs, more than {} MiB: set a smaller image.size",
            files.len(),
            bytes >> 20,
            MAX_PIXEL_BYTES >> 20
        )));
    }
    let encoded = files
        .iter()
        .map(|(path, bytes)| {
            let p = pixels(bytes, channels, size)
                .map_err(|e| Error::invalid(format!("image '{path}': {}", e.message)))?;
            Ok((path.clone(), p))
        })
        .collect::<Result<_>>()?;
    Ok((size, channels, encoded))
}

/// Refuses sizes and channel counts training cannot use; the error names the setting.
pub fn check(size: usize, channels: usize) -> Result<()> {
    if !(1..=MAX_SIZE).contains(&size) {
        return Err(Error::invalid(format!(
            "image.size must be between 1 and {MAX_SIZE}, got {size}"
        )));
    }
    if !matches!(channels, 1 | 3) {
        return Err(Error::invalid(format!(
            "image.channels must be 1 (grey) or 3 (RGB), got {channels}"
        )));
    }
    Ok(())
}

/// Moves the image `image` (`channels × size × size`) by `(dx, dy)` pixels and turns it by
/// `degrees` about its centre, sampling bilinearly; what comes in from outside is 0.
pub fn transform(
    image: &[f32],
    channels: usize,
    size: usize,
    dx: f32,
    dy: f32,
    degrees: f32,
) -> Vec<f32> {
    let plane = size * size;
    let mut out = vec![0f32; image.len()];
    let (sin, cos) = degrees.to_radians().sin_cos();
    let c = (size as f32 - 1.0) / 2.0;
    let at = |ch: usize, x: isize, y: isize| -> f32 {
        if x < 0 || y < 0 || x >= size as isize || y >= size as isize {
            0.0
        } else {
            image[ch * plane + y as usize * size + x as usize]
        }
    };
    for y in 0..size {
        for x in 0..size {
            // Where this output pixel comes from: the inverse of rotate-then-shift.
            let (u, v) = (x as f32 - dx - c, y as f32 - dy - c);
            let sx = cos * u + sin * v + c;
            let sy = -sin * u + cos * v + c;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            for ch in 0..channels {
                let top = at(ch, x0, y0) * (1.0 - fx) + at(ch, x0 + 1, y0) * fx;
                let bottom = at(ch, x0, y0 + 1) * (1.0 - fx) + at(ch, x0 + 1, y0 + 1) * fx;
                out[ch * plane + y * size + x] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    out
}

/// A random shift of up to `shift` pixels each way and turn of up to `degrees`, drawn from `rng`.
pub fn augment(
    image: &[f32],
    channels: usize,
    size: usize,
    shift: usize,
    degrees: f64,
    rng: &mut impl Rng,
) -> Vec<f32> {
    let s = shift as i64;
    let (dx, dy) = match s {
        0 => (0, 0),
        _ => (rng.gen_range(-s..=s), rng.gen_range(-s..=s)),
    };
    let angle = match degrees {
        d if d > 0.0 => rng.gen_range(-d..=d),
        _ => 0.0,
    };
    transform(image, channels, size, dx as f32, dy as f32, angle as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(img: image::DynamicImage) -> Vec<u8> {
        let mut out = std::io::Cursor::new(vec![]);
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn pixels_are_grey_or_channel_major_rgb_in_0_to_1() {
        let rgb = image::RgbImage::from_fn(2, 2, |x, y| {
            image::Rgb([255, (x * 255) as u8, (y * 255) as u8])
        });
        let bytes = png(rgb.into());
        let p = pixels(&bytes, 3, 2).unwrap();
        assert_eq!(
            p,
            vec![1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]
        );
        let grey = pixels(&bytes, 1, 2).unwrap();
        let luma = |r: f32, g: f32, b: f32| 0.299 * r + 0.587 * g + 0.114 * b;
        assert_eq!(
            grey,
            vec![
                luma(1.0, 0.0, 0.0),
                luma(1.0, 1.0, 0.0),
                luma(1.0, 0.0, 1.0),
                luma(1.0, 1.0, 1.0)
            ]
        );
        assert_eq!(pixels(&bytes, 1, 4).unwrap().len(), 16);
        assert!(pixels(b"not an image", 1, 2)
            .unwrap_err()
            .message
            .contains("not an image"));
    }

    #[test]
    fn sizes_and_channels_come_from_the_images_unless_set() {
        let grey = |w, h| png(image::GrayImage::new(w, h).into());
        let files = BTreeMap::from([
            ("a/1.png".to_owned(), grey(8, 8)),
            ("b/2.png".to_owned(), grey(8, 8)),
        ]);
        let (size, channels, px) = encode_all(&files, &ImageSpec::default()).unwrap();
        assert_eq!((size, channels, px["a/1.png"].len()), (8, 1, 64));
        let mut mixed = files.clone();
        mixed.insert(
            "c/3.png".to_owned(),
            png(image::RgbImage::new(10, 6).into()),
        );
        let e = encode_all(&mixed, &ImageSpec::default())
            .unwrap_err()
            .message;
        assert!(
            e.contains("differ in size") && e.contains("image.size"),
            "{e}"
        );
        let (size, channels, px) = encode_all(
            &mixed,
            &ImageSpec {
                size: Some(4),
                channels: None,
            },
        )
        .unwrap();
        assert_eq!((size, channels, px["c/3.png"].len()), (4, 3, 48));
        let many: BTreeMap<String, Vec<u8>> = (0..1400)
            .map(|i| (format!("x/{i}.png"), grey(1, 1)))
            .collect();
        let big = ImageSpec {
            size: Some(256),
            channels: Some(3),
        };
        let e = encode_all(&many, &big).unwrap_err().message;
        assert!(e.contains("smaller image.size"), "{e}");
        let e = encode_all(
            &files,
            &ImageSpec {
                size: None,
                channels: Some(2),
            },
        )
        .unwrap_err()
        .message;
        assert!(e.contains("image.channels"), "{e}");
    }

    #[test]
    fn shifts_move_pixels_and_quarter_turns_rotate_exactly() {
        // A 3x3 grey image with one bright pixel at (x=0, y=1).
        let mut img = vec![0f32; 9];
        img[3] = 1.0;
        let moved = transform(&img, 1, 3, 1.0, 0.0, 0.0);
        assert_eq!(moved.iter().position(|v| *v == 1.0), Some(4));
        assert_eq!(moved.iter().sum::<f32>(), 1.0);
        let out = transform(&img, 1, 3, -1.0, 0.0, 0.0);
        assert_eq!(out.iter().sum::<f32>(), 0.0, "shifted out of the frame");
        // A 90° turn maps (0, 1) about the centre (1, 1) to (1, 0) or (1, 2), a pixel away.
        let turned = transform(&img, 1, 3, 0.0, 0.0, 90.0);
        let at = turned.iter().position(|v| (*v - 1.0).abs() < 1e-5).unwrap();
        assert!(at == 1 || at == 7, "{turned:?}");
        assert!((turned.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(transform(&img, 1, 3, 0.0, 0.0, 0.0), img);
    }
}
