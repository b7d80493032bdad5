//! Times the loader's stages on one thread (decode, resize, augment) for one synthetic JPEG.
//! `cargo run --release --example loader_stages`
use std::time::Instant;
use unreid::data::synth::{encode_jpeg, plan_domain, render_image, Domain, SynthConfig};
use unreid::data::transforms::{augment_keyed, resize, AugmentConfig, Interpolation, SampleKey};

fn main() {
    for (h, w) in [(128usize, 64usize), (256, 128)] {
        let cfg = SynthConfig {
            height: h,
            width: w,
            ..SynthConfig::default()
        };
        let plan = plan_domain(&cfg, Domain::Source);
        let bytes = encode_jpeg(&render_image(&cfg, &plan[0]), 90).unwrap();
        let n = 300;
        let t = Instant::now();
        let mut img = None;
        for _ in 0..n {
            img = Some(
                unreid::data::decode::decode_rgb_bytes(&bytes, std::path::Path::new("x")).unwrap(),
            );
        }
        let decode = t.elapsed().as_secs_f64() / n as f64;
        let img = img.unwrap();
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(resize(&img, 256, 128, Interpolation::Bicubic));
        }
        let rs = t.elapsed().as_secs_f64() / n as f64;
        let aug = AugmentConfig::train(256, 128);
        let mut out = vec![0f32; aug.image_len()];
        let t = Instant::now();
        for i in 0..n {
            augment_keyed(
                &aug,
                &img,
                SampleKey {
                    seed: 0,
                    epoch: 0,
                    index: i as u64,
                    view: 0,
                },
                &mut out,
            );
        }
        let total = t.elapsed().as_secs_f64() / n as f64;
        println!(
            "{h}x{w}: {} bytes, decode {:.3} ms, resize {:.3} ms, augment (incl. resize) {:.3} ms",
            bytes.len(),
            decode * 1e3,
            rs * 1e3,
            total * 1e3
        );
    }
}
