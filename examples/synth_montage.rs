//! Writes a contact sheet of the synthetic benchmark for eyeballing: one row per identity, source then target.
//! `cargo run --example synth_montage -- OUT.png [IDS]`
use unreid::data::synth::{plan_domain, render_image, Domain, SynthConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).cloned().unwrap_or_else(|| "montage.png".into());
    let rows: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(6);
    let cfg = SynthConfig::default();
    let cols = 10;
    let (h, w) = (cfg.height as u32, cfg.width as u32);
    let mut sheet = image::RgbImage::new(w * cols as u32 * 2 + 8, h * rows as u32);
    for (d, domain) in Domain::BOTH.into_iter().enumerate() {
        let plan = plan_domain(&cfg, domain);
        for r in 0..rows {
            let imgs: Vec<_> = plan
                .iter()
                .filter(|p| p.identity == Some(r))
                .take(cols)
                .collect();
            for (c, p) in imgs.iter().enumerate() {
                let img = render_image(&cfg, p);
                let x0 = d as u32 * (w * cols as u32 + 8) + c as u32 * w;
                for (x, y, px) in img.enumerate_pixels() {
                    sheet.put_pixel(x0 + x, r as u32 * h + y, *px);
                }
            }
        }
    }
    sheet.save(&out)?;
    Ok(())
}
