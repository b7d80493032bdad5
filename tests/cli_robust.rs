//! Issue 13, "no silent fallbacks, no panics": every instance the issue lists, built from files the
//! test creates, and one test per kind of bad input that walks every subcommand (so a new command
//! cannot reintroduce the fault: an unlisted subcommand fails the walk until it is added).

use clap::{CommandFactory, Parser};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use unreid::cli::Cli;
use unreid::data::datasets::{image_files, load, DatasetSpec, Layout, ListFiles};
use unreid::features::FeatureSet;

// ---------------------------------------------------------------------------------------------
// Fixtures

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "unreid-robust-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn image(path: &Path, tint: u8, format: image::ImageFormat) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(16, 32, |x, y| {
        image::Rgb([tint, (x * 12) as u8, (y * 6) as u8])
    });
    img.save_with_format(path, format).unwrap();
}

fn jpg(path: &Path, tint: u8) {
    image(path, tint, image::ImageFormat::Jpeg)
}

/// A tiny Market-1501 folder: 2 train ids, query/gallery ids 3 and 4 over cameras 1-3.
fn market(root: &Path) {
    for (i, name) in [
        "bounding_box_train/0001_c1s1_000001_01.jpg",
        "bounding_box_train/0001_c2s1_000001_01.jpg",
        "bounding_box_train/0002_c1s1_000002_01.jpg",
        "bounding_box_train/0002_c2s1_000002_01.jpg",
        "query/0003_c1s1_000003_01.jpg",
        "query/0004_c2s1_000004_01.jpg",
        "bounding_box_test/0003_c2s1_000005_01.jpg",
        "bounding_box_test/0003_c3s1_000006_01.jpg",
        "bounding_box_test/0004_c1s1_000007_01.jpg",
        "bounding_box_test/0004_c3s1_000008_01.jpg",
    ]
    .iter()
    .enumerate()
    {
        jpg(&root.join(name), 20 * i as u8);
    }
}

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn unreid_in(dir: Option<&Path>, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_unreid"));
    cmd.args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd.output().unwrap();
    let run = Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "unreid {args:?} panicked:\n{}",
        run.stderr
    );
    run
}

fn unreid(args: &[&str]) -> Run {
    unreid_in(None, args)
}

fn weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/mobilenet_v2_imagenet.safetensors")
}

/// Features of `pids` x `cams` rows, a distinct direction per id, with paths and a root.
fn features(pids: &[i64], cams: &[i64], paths: Vec<String>, root: Option<&Path>) -> FeatureSet {
    let dim = 8;
    let mut f = Vec::new();
    for (i, &p) in pids.iter().enumerate() {
        let mut v = vec![0.01 * i as f32; dim];
        v[(p.unsigned_abs() as usize) % dim] += 1.0;
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        f.extend(v.iter().map(|x| x / n));
    }
    FeatureSet {
        features: f,
        num: pids.len(),
        dim,
        pids: Some(pids.to_vec()),
        camids: Some(cams.to_vec()),
        paths,
        provenance: root
            .map(|r| [("root".to_string(), r.display().to_string())].into())
            .unwrap_or_default(),
    }
}

/// Every subcommand the CLI has, so the kind walks below can insist on covering them all.
fn subcommands() -> BTreeSet<String> {
    Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

fn assert_covers(table: &[&str], kind: &str) {
    let listed: BTreeSet<String> = table.iter().map(|s| s.to_string()).collect();
    let missing: Vec<_> = subcommands().difference(&listed).cloned().collect();
    assert!(
        missing.is_empty(),
        "subcommands {missing:?} are not in the `{kind}` walk: add a bad-input case for them"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. A fallback value never passes for a result

#[test]
fn evaluate_with_zero_valid_queries_is_an_error_with_counted_reasons() {
    let t = Tmp::new("zero-valid");
    // Query ids: 1 (gallery only in the query's camera), 2 (absent from the gallery), -1 (unknown).
    let q = features(&[1, 2, -1], &[0, 0, 0], vec![], None);
    let g = features(&[1, 1, 5], &[0, 0, 1], vec![], None);
    let (qf, gf, json) = (t.join("q.st"), t.join("g.st"), t.join("eval.json"));
    q.save(&qf).unwrap();
    g.save(&gf).unwrap();
    let r = unreid(&[
        "evaluate",
        "--query",
        s(&qf),
        "--gallery",
        s(&gf),
        "--json",
        s(&json),
        "--device",
        "cpu",
    ]);
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        !r.stdout.contains("mAP: 0.0") && !r.stdout.contains("0.0%"),
        "{}",
        r.stdout
    );
    for reason in [
        "no valid query among 3",
        "1 with an unknown id",
        "1 with an id absent from the gallery",
        "1 with true matches only in their own camera",
    ] {
        assert!(r.stderr.contains(reason), "{reason}: {}", r.stderr);
    }
    assert!(!json.exists(), "no JSON with a made-up mAP");
    // The unknown query row is reported by name of its kind before evaluation.
    assert!(r.stderr.contains("unknown pid or camid"), "{}", r.stderr);
}

#[test]
fn skip_reasons_and_minp_hand_computed() {
    use unreid::eval::{evaluate_with, score_query};
    // Query pid 1 cam 0. Valid order: pid2, pid1 (rank 2), pid3, pid1 (rank 4).
    // AP = (1/2 + 2/4) / 2 = 0.5; INP = 2 matches / last match at rank 4 = 0.5.
    let dist = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.05];
    let pids = [1i64, 2, 1, 3, 1, -1];
    let cams = [0i64, 1, 1, 2, 2, 1];
    let sc = score_query(&dist, 1, 0, &pids, &cams).unwrap();
    assert!((sc.inp - 0.5).abs() < 1e-12);
    // pid 3 cam 0: pid1, pid2, pid1 come first, its one match is at rank 4 -> INP 1/4.
    let sc3 = score_query(&dist, 3, 0, &pids, &cams).unwrap();
    assert!((sc3.inp - 0.25).abs() < 1e-12, "{}", sc3.inp);
    let r = evaluate_with(
        (&[1, 3, 9, -1, 2], &[0, 0, 0, 0, 1]),
        (&pids, &cams),
        10,
        |q0, n, out| {
            for t in 0..n {
                let _ = q0;
                out[t * 6..(t + 1) * 6].copy_from_slice(&dist);
            }
        },
    )
    .unwrap();
    assert_eq!(r.num_valid_queries, 2);
    assert!((r.minp - (0.5 + 0.25) / 2.0).abs() < 1e-12);
    // 9: not in the gallery; -1: unknown; pid 2 cam 1: its only gallery image is in camera 1.
    assert_eq!(
        (
            r.skipped.id_not_in_gallery,
            r.skipped.unknown_id,
            r.skipped.same_camera_only
        ),
        (1, 1, 1)
    );
    assert_eq!(r.rank(0), None);
    assert_eq!(r.rank(11), None);
}

#[test]
fn unparsable_names_are_counted_with_an_example() {
    // A Market folder with names that do not parse: every one is counted, one is shown.
    let t = Tmp::new("badnames");
    market(t.path());
    jpg(&t.join("bounding_box_test/holiday.jpg"), 1);
    jpg(&t.join("bounding_box_test/IMG_2041.jpg"), 2);
    let err = load(&DatasetSpec::new(t.path(), Layout::Market1501))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot parse the pid and camera from 2 of 6 file names")
            && err.contains("IMG_2041.jpg"),
        "{err}"
    );
    // extract --images: the warning counts and shows one; the known ones keep their ids.
    let imgs = Tmp::new("badnames-extract");
    jpg(&imgs.join("0002_c1s1_000451_03.jpg"), 1);
    jpg(&imgs.join("0003_c2s1_000451_03.jpg"), 2);
    jpg(&imgs.join("sub/holiday.jpg"), 3);
    let out = imgs.join("f.safetensors");
    let r = unreid(&[
        "extract",
        "--arch",
        "mobilenet_v2",
        "--weights",
        s(&weights()),
        "--images",
        s(&imgs.join("")),
        "--height",
        "32",
        "--width",
        "16",
        "--device",
        "cpu",
        "--out",
        s(&out),
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("1 of 3 file names do not give a pid and camera")
            && r.stderr.contains("sub/holiday.jpg"),
        "{}",
        r.stderr
    );
    let set = FeatureSet::load(&out).unwrap();
    assert_eq!(set.pids.unwrap(), vec![2, 3, -1]);
}

#[test]
fn cluster_prints_user_names_one_cluster_quality_and_paths() {
    let t = Tmp::new("cluster");
    // Eight copies of nearly one point with two true ids: one DBSCAN cluster.
    let mut set = features(
        &[7; 8],
        &[0, 1, 0, 1, 0, 1, 0, 1],
        (0..8).map(|i| format!("img/{i}.jpg")).collect(),
        Some(Path::new("/data/x")),
    );
    set.pids = Some(vec![1, 1, 1, 1, 2, 2, 2, 2]);
    let (f, out) = (t.join("f.st"), t.join("labels.json"));
    set.save(&f).unwrap();
    let r = unreid(&[
        "cluster",
        "--features",
        s(&f),
        "--distance",
        "euclidean",
        "--eps",
        "0.5",
        "--min-samples",
        "2",
        "--device",
        "cpu",
        "--out",
        s(&out),
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.contains("8 points -> 1 cluster, 0 outliers"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("dbscan on euclidean"), "{}", r.stdout);
    assert!(
        r.stdout.contains("NMI") && r.stdout.contains("ARI"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("device: cpu"), "{}", r.stderr);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(json["algo"], "dbscan");
    assert_eq!(json["distance"], "euclidean");
    assert_eq!(json["paths"][3], "img/3.jpg");
    assert_eq!(json["root"], "/data/x");
    // One cluster for two ids of four: pairwise precision = 2 * C(4,2) / C(8,2) = 12/28, recall 1.
    let q = &json["quality"];
    assert!(
        (q["pairwise_precision"].as_f64().unwrap() - 12.0 / 28.0).abs() < 1e-12,
        "{q}"
    );
    assert!(
        (q["pairwise_recall"].as_f64().unwrap() - 1.0).abs() < 1e-12,
        "{q}"
    );
    assert!(q["ari"].as_f64().unwrap().abs() < 1e-12, "{q}");
}

// ---------------------------------------------------------------------------------------------
// 2. One reader per kind of input

#[test]
fn png_named_jpg_passes_every_command_including_visualize() {
    let t = Tmp::new("png-as-jpg");
    let root = t.join("data");
    let names: Vec<String> = ["q/0001_c1.jpg", "g/0001_c2.jpg", "g/0002_c2.jpg"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (i, n) in names.iter().enumerate() {
        // PNG bytes under a .jpg name.
        image(&root.join(n), 40 * i as u8, image::ImageFormat::Png);
    }
    assert!(unreid::data::decode::decode_rgb(&root.join(&names[0])).is_ok());
    let q = features(&[1], &[0], vec![names[0].clone()], Some(&root));
    let g = features(&[1, 2], &[1, 1], names[1..].to_vec(), Some(&root));
    let (qf, gf, json, pics) = (
        t.join("q.st"),
        t.join("g.st"),
        t.join("e.json"),
        t.join("pics"),
    );
    q.save(&qf).unwrap();
    g.save(&gf).unwrap();
    // Run from another folder: images resolve through the root recorded in the files.
    let elsewhere = Tmp::new("cwd");
    let r = unreid_in(
        Some(elsewhere.path()),
        &[
            "evaluate",
            "--query",
            s(&qf),
            "--gallery",
            s(&gf),
            "--json",
            s(&json),
            "--visualize",
            s(&pics),
            "--device",
            "cpu",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(pics.join("000_0001_c1.png").is_file());
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["pictures"].as_array().unwrap().len(), 1);
    assert!((v["mAP"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert!((v["mINP"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    // The table users know.
    for col in ["mAP", "mINP", "Rank-1", "Rank-5", "Rank-10"] {
        assert!(r.stdout.contains(col), "{col}: {}", r.stdout);
    }
}

#[test]
fn a_failing_picture_keeps_the_metrics_and_json() {
    let t = Tmp::new("pic-fails");
    let q = features(
        &[1, 2],
        &[0, 0],
        vec!["gone/q1.jpg".into(), "gone/q2.jpg".into()],
        Some(t.path()),
    );
    let g = features(
        &[1, 2],
        &[1, 1],
        vec!["gone/g1.jpg".into(), "gone/g2.jpg".into()],
        Some(t.path()),
    );
    let (qf, gf, json, pics) = (
        t.join("q.st"),
        t.join("g.st"),
        t.join("e.json"),
        t.join("pics"),
    );
    q.save(&qf).unwrap();
    g.save(&gf).unwrap();
    let r = unreid(&[
        "evaluate",
        "--query",
        s(&qf),
        "--gallery",
        s(&gf),
        "--json",
        s(&json),
        "--visualize",
        s(&pics),
        "--sort-by-ap",
        "--device",
        "cpu",
    ]);
    assert!(!r.ok);
    assert!(r.stdout.contains("mAP"), "{}", r.stdout);
    assert!(
        r.stderr.contains("2 of 2 ranked-list pictures failed") && r.stderr.contains("q1.jpg"),
        "{}",
        r.stderr
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!((v["mAP"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(v["picture_errors"].as_array().unwrap().len(), 2);
}

#[test]
fn text_inputs_with_bom_crlf_and_trailing_blanks_read_like_plain_ones() {
    let t = Tmp::new("bom");
    jpg(&t.join("imgs/a.jpg"), 1);
    jpg(&t.join("imgs/b.jpg"), 2);
    let list = t.join("train.txt");
    std::fs::write(
        &list,
        "\u{feff}imgs/a.jpg 1 0  \r\n# comment\r\n\r\nimgs/b.jpg 2 1\t\r\n",
    )
    .unwrap();
    let spec = DatasetSpec {
        root: t.path().to_path_buf(),
        layout: Layout::List,
        lists: ListFiles {
            train: Some(list.clone()),
            query: None,
            gallery: None,
        },
        domain: 0,
    };
    let ds = load(&spec).unwrap();
    assert_eq!(ds.train.len(), 2);
    assert_eq!(ds.train[0].path, t.join("imgs/a.jpg"));
    assert_eq!(ds.train[1].camid, 1);
    // Line numbers survive the normalisation (line 4 here).
    std::fs::write(
        &list,
        "\u{feff}imgs/a.jpg 1 0\r\n# c\r\n\r\nimgs/b.jpg x 1\r\n",
    )
    .unwrap();
    let err = load(&spec).unwrap_err().to_string();
    assert!(err.contains("train.txt:4:"), "{err}");
    // The one reader, directly; and invisible characters are shown escaped in messages.
    let lines = unreid::io::read_text_lines(&list).unwrap();
    assert_eq!(lines[0].text, "imgs/a.jpg 1 0");
    assert_eq!(lines[1].number, 4);
    assert_eq!(
        unreid::io::shown(Path::new("\u{feff}a.jpg")),
        "\"\\u{feff}a.jpg\""
    );
    assert_eq!(
        unreid::io::shown(Path::new("/data/a b.jpg")),
        "/data/a b.jpg"
    );
    // check-data takes the same list through the shared dataset flags.
    std::fs::write(&list, "\u{feff}imgs/a.jpg 1 0\r\nimgs/b.jpg 2 1\r\n").unwrap();
    let r = unreid(&[
        "check-data",
        s(t.path()),
        "--layout",
        "LIST",
        "--list",
        s(&list),
    ]);
    assert!(
        r.ok && r.stdout.contains("all 2 images decode"),
        "{}{}",
        r.stdout,
        r.stderr
    );
}

#[cfg(unix)]
#[test]
fn folder_walk_ends_on_loops_counts_files_once_and_names_unreadable_folders() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let t = Tmp::new("walk");
    jpg(&t.join("a/0001_c1s1_000001_01.jpg"), 1);
    jpg(&t.join("a/deep/0002_c1s1_000001_01.jpg"), 2);
    symlink(t.join("a"), t.join("a/deep/loop")).unwrap(); // a loop back up
    symlink(t.join("a"), t.join("again")).unwrap(); // a second route to the same folder
    let files = image_files(t.path()).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    // An unreadable folder is reported by name, not skipped and not "not a folder".
    let locked = t.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    jpg(&locked.join("0003_c1s1_000001_01.jpg"), 3);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let readable_anyway = std::fs::read_dir(&locked).is_ok(); // root ignores permissions
    let result = image_files(t.path());
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    if !readable_anyway {
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("cannot read folder") && err.contains("locked"),
            "{err}"
        );
    }
}

#[test]
fn layout_detection_names_the_real_missing_piece() {
    let t = Tmp::new("msmt-missing");
    let v1 = t.join("MSMT17_V1");
    jpg(&v1.join("train/0000/0000_000_01_0303morning_0008_0.jpg"), 1);
    jpg(&v1.join("test/0000/0000_000_01_0303morning_0009_0.jpg"), 2);
    for layout in ["msmt17", "auto"] {
        let r = unreid(&["check-data", s(t.path()), "--layout", layout]);
        assert!(!r.ok);
        assert!(
            r.stderr.contains("MSMT17_V1")
                && r.stderr.contains("list_train.txt")
                && r.stderr.contains("list_gallery.txt")
                && !r.stderr.contains(&format!("{}/train ", s(t.path()))),
            "{layout}: {}",
            r.stderr
        );
    }
    // Market with its gallery folder missing: that folder is named.
    let m = Tmp::new("market-missing");
    market(m.path());
    std::fs::remove_dir_all(m.join("bounding_box_test")).unwrap();
    let err = load(&DatasetSpec::new(m.path(), Layout::Auto))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not found") && err.contains("bounding_box_test"),
        "{err}"
    );
}

#[test]
fn layout_names_users_type_are_accepted_case_insensitively() {
    for (name, layout) in [
        ("market", Layout::Market1501),
        ("Market-1501", Layout::Market1501),
        ("MARKET1501", Layout::Market1501),
        ("duke", Layout::Duke),
        ("DukeMTMC-reID", Layout::Duke),
        ("dukemtmc", Layout::Duke),
        ("msmt", Layout::Msmt17),
        ("MSMT17", Layout::Msmt17),
        ("MSMT17_V1", Layout::Msmt17),
    ] {
        assert_eq!(Layout::parse(name), Ok(layout), "{name}");
        for cmd in [
            vec!["unreid", "check-data", "d", "--layout", name],
            vec![
                "unreid",
                "extract",
                "--arch",
                "resnet50",
                "--weights",
                "w",
                "--data",
                "d",
                "--layout",
                name,
                "--out",
                "o",
            ],
        ] {
            Cli::try_parse_from(&cmd).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        }
        // train reads two datasets with the same flags, prefixed.
        let cmd = [
            "unreid",
            "train",
            "--method",
            "source",
            "--source",
            "s",
            "--source-layout",
            name,
            "--target",
            "t",
            "--target-layout",
            name,
            "--out",
            "o",
        ];
        Cli::try_parse_from(cmd).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    }
    assert!(Layout::parse("cuhk03").unwrap_err().contains("market1501"));
    let bad = Cli::try_parse_from([
        "unreid",
        "train",
        "--method",
        "source",
        "--source",
        "s",
        "--source-layout",
        "cuhk03",
        "--out",
        "o",
    ]);
    assert!(bad.is_err());
}

#[test]
fn extract_reads_list_layouts_and_records_provenance() {
    let t = Tmp::new("extract-list");
    jpg(&t.join("imgs/a.jpg"), 1);
    jpg(&t.join("imgs/b.jpg"), 2);
    let list = t.join("query.txt");
    std::fs::write(&list, "imgs/b.jpg 7 2\nimgs/a.jpg 5 0\n").unwrap();
    let out = t.join("feats/q.safetensors");
    let r = unreid(&[
        "extract",
        "--arch",
        "mobilenet_v2",
        "--weights",
        s(&weights()),
        "--data",
        s(t.path()),
        "--layout",
        "list",
        "--query-list",
        s(&list),
        "--split",
        "query",
        "--height",
        "32",
        "--width",
        "16",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--out",
        s(&out),
    ]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("device: cpu"), "{}", r.stderr);
    assert!(
        r.stderr.contains("(query split)")
            && r.stderr.contains("32x16")
            && r.stderr.contains("batch 1"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.contains(s(&out)), "{}", r.stdout);
    let set = FeatureSet::load(&out).unwrap();
    assert_eq!(set.paths, vec!["imgs/b.jpg", "imgs/a.jpg"]);
    assert_eq!(set.pids.as_deref(), Some(&[7, 5][..]));
    assert_eq!(set.camids.as_deref(), Some(&[2, 0][..]));
    let p = &set.provenance;
    assert_eq!(p["arch"], "mobilenet_v2");
    assert_eq!(p["split"], "query");
    assert_eq!(p["layout"], "list");
    assert_eq!((p["height"].as_str(), p["width"].as_str()), ("32", "16"));
    assert_eq!(
        Path::new(&p["root"]),
        std::fs::canonicalize(t.path()).unwrap()
    );
    // The SHA-256 agrees with coreutils' (an independent implementation), when it is installed.
    if let Ok(o) = Command::new("sha256sum").arg(weights()).output() {
        let expected = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        assert_eq!(p["weights_sha256"], expected);
    }
}

#[test]
fn train_reads_list_datasets_with_the_flags_every_command_takes() {
    let t = Tmp::new("train-list");
    // Two train ids of two images each, and query/gallery ids over two cameras.
    let mut train = String::new();
    for (k, (pid, cam)) in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
        .iter()
        .enumerate()
    {
        jpg(
            &t.join(&format!("imgs/train{k}.jpg")),
            40 * *pid as u8 + 10 * k as u8,
        );
        train.push_str(&format!("imgs/train{k}.jpg {pid} {cam}\n"));
    }
    let (mut query, mut gallery) = (String::new(), String::new());
    for pid in 5..8 {
        jpg(&t.join(&format!("imgs/q{pid}.jpg")), 30 * pid as u8);
        query.push_str(&format!("imgs/q{pid}.jpg {pid} 0\n"));
        jpg(&t.join(&format!("imgs/g{pid}.jpg")), 30 * pid as u8 + 5);
        gallery.push_str(&format!("imgs/g{pid}.jpg {pid} 1\n"));
    }
    // A byte-order mark and CRLF line ends, as Windows editors write them.
    std::fs::write(
        t.join("train.txt"),
        format!("\u{feff}{}", train.replace('\n', "\r\n")),
    )
    .unwrap();
    std::fs::write(t.join("query.txt"), &query).unwrap();
    std::fs::write(t.join("gallery.txt"), &gallery).unwrap();
    let run_dir = t.join("run");
    let run2 = t.join("run2");
    let (train_list, query_list, gallery_list) = (
        t.join("train.txt"),
        t.join("query.txt"),
        t.join("gallery.txt"),
    );
    let mut args = vec![
        "train",
        "--method",
        "source",
        "--source",
        s(t.path()),
        "--source-layout",
        "list",
        "--source-list",
        s(&train_list),
        "--source-query-list",
        s(&query_list),
        "--source-gallery-list",
        s(&gallery_list),
        "--arch",
        "resnet18",
        "--epochs",
        "1",
        "--iters",
        "1",
        "--batch-size",
        "4",
        "--num-instances",
        "2",
        "--height",
        "32",
        "--width",
        "16",
        "--device",
        "cpu",
        "--out",
        s(&run_dir),
    ];
    let r = unreid(&args);
    assert!(r.ok, "{}", r.stderr);
    let config = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    assert!(
        config.contains("source_layout = \"list\"") && config.contains("train.txt"),
        "{config}"
    );
    assert!(r.stdout.contains("final: mAP"), "{}", r.stdout);

    // A list file that does not exist is named with its flag before any work.
    args[8] = "/no/such/train.txt";
    *args.last_mut().unwrap() = s(&run2);
    let r = unreid(&args);
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr.contains("--source-list") && r.stderr.contains("/no/such/train.txt"),
        "{}",
        r.stderr
    );
    assert!(!run2.join("metrics.jsonl").exists());
    // --clusters is k-means' cluster count: refused for a method that clusters by DBSCAN.
    let run3 = t.join("run3");
    let r = unreid(&[
        "train",
        "--method",
        "spcl",
        "--target",
        s(t.path()),
        "--clusters",
        "5",
        "--out",
        s(&run3),
    ]);
    assert!(!r.ok && r.stderr.contains("--clusters"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// 3. Fail before the work, never after; never panic

#[test]
fn synth_locks_its_output_refuses_non_empty_and_cleans_stale_partials() {
    let t = Tmp::new("synth");
    let out = t.join("bench");
    let small = [
        "--ids",
        "4",
        "--cameras",
        "2",
        "--size",
        "32x16",
        "--images-per-id",
        "4-4",
    ];
    // Another run holds the folder: refused at once, naming it.
    {
        let _held = unreid::io::OutputLock::acquire(&out).unwrap();
        let mut args = vec!["synth", "--out", s(&out)];
        args.extend(small);
        let r = unreid(&args);
        assert!(
            !r.ok && r.stderr.contains("in use by another unreid process"),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr.contains(&format!("pid {}", std::process::id())),
            "{}",
            r.stderr
        );
    }
    // A stale staging folder of a killed run is cleaned; the lock file is gone afterwards.
    std::fs::create_dir_all(out.join(".source.partial-99999/query")).unwrap();
    let mut args = vec!["synth", "--out", s(&out)];
    args.extend(small);
    let r = unreid(&args);
    assert!(r.ok, "{}", r.stderr);
    let names: BTreeSet<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["source", "target", "synth.json"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    // A second run into the now non-empty folder is refused; --overwrite replaces.
    let r = unreid(&args);
    assert!(
        !r.ok && r.stderr.contains("not empty") && r.stderr.contains("--overwrite"),
        "{}",
        r.stderr
    );
    args.push("--overwrite");
    assert!(unreid(&args).ok);
}

#[test]
fn extract_checks_out_before_reading_weights_or_images() {
    let t = Tmp::new("extract-out");
    std::fs::write(t.join("file"), b"x").unwrap();
    let bad_out = t.join("file/feats.safetensors");
    let r = unreid(&[
        "extract",
        "--arch",
        "resnet50",
        "--weights",
        "/no/such/weights.safetensors",
        "--images",
        "/no/such/images",
        "--out",
        s(&bad_out),
    ]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("--out") && r.stderr.contains("file/feats.safetensors"),
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("weights.safetensors"),
        "checked --out first: {}",
        r.stderr
    );
}

#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let t = Tmp::new("pipe");
    market(t.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_unreid"))
        .args(["check-data", s(t.path())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `| head -0`
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    assert!(
        status.success() || status.signal() == Some(libc_sigpipe()),
        "{status:?}"
    );
}

fn libc_sigpipe() -> i32 {
    13
}

// ---------------------------------------------------------------------------------------------
// Kind walks: every subcommand with bad input of one kind.

/// Kind: an input file or folder that does not exist. Every command names it and fails.
#[test]
fn every_command_names_a_missing_input() {
    let t = Tmp::new("walk-missing");
    let missing = t.join("no-such-input");
    let m = s(&missing);
    let out = t.join("out.x");
    let o = s(&out);
    let run = t.join("run");
    let run_dir = s(&run);
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("check-data", vec!["check-data", m]),
        ("cluster", vec!["cluster", "--features", m, "--out", o]),
        ("evaluate", vec!["evaluate", "--query", m, "--gallery", m]),
        (
            "extract",
            vec![
                "extract",
                "--arch",
                "resnet18",
                "--weights",
                m,
                "--images",
                m,
                "--out",
                o,
            ],
        ),
        (
            "train",
            vec![
                "train", "--method", "source", "--source", m, "--out", run_dir,
            ],
        ),
        ("convert", vec!["convert", m, o]),
        // synth, info, bench and demo read no input files: the walk still lists them on purpose.
        ("synth", vec![]),
        ("info", vec![]),
        ("bench", vec![]),
        ("demo", vec![]),
    ];
    assert_covers(
        &cases.iter().map(|c| c.0).collect::<Vec<_>>(),
        "missing input",
    );
    for (name, args) in cases.iter().filter(|c| !c.1.is_empty()) {
        let r = unreid(args);
        assert!(!r.ok && r.code == Some(1), "{name}: {}", r.stderr);
        assert!(r.stderr.contains("no-such-input"), "{name}: {}", r.stderr);
    }
}

/// Kind: a numeric flag out of range. Every numeric flag of every command rejects a negative
/// value and text at parse time, and 0 unless 0 means something (a seed, an index, a radius).
#[test]
fn every_numeric_flag_has_a_checked_range() {
    let zero_ok = ["seed", "domain", "eps", "eps_gap", "lambda", "warmup"];
    let mut checked = 0;
    let mut commands = Vec::new();
    for sub in Cli::command().get_subcommands() {
        commands.push(sub.get_name().to_string());
        // Required arguments with harmless values, so only the flag under test can fail.
        let mut base = vec!["unreid".to_string(), sub.get_name().to_string()];
        for a in sub.get_arguments().filter(|a| a.is_required_set()) {
            let value = a
                .get_possible_values()
                .first()
                .map(|v| v.get_name().to_string())
                .unwrap_or_else(|| "x".into());
            match a.get_long() {
                Some(long) => base.extend([format!("--{long}"), value]),
                None => base.push(value),
            }
        }
        if sub.get_name() == "extract" {
            base.extend(["--images".into(), "x".into()]);
        }
        if sub.get_name() == "bench" {
            // Its size flags only apply to one chosen case.
            base.extend(["--arch".into(), "resnet18".into()]);
        }
        for a in sub.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            let Some(default) = a.get_default_values().first() else {
                continue;
            };
            let default = default.to_string_lossy();
            if default.parse::<f64>().is_err() {
                continue;
            }
            checked += 1;
            let id = a.get_id().as_str().to_string();
            let mut values = vec!["-1", "abc"];
            if !zero_ok.contains(&id.as_str()) {
                values.push("0");
            }
            for v in values {
                let mut args = base.clone();
                args.push(format!("--{long}={v}"));
                assert!(
                    Cli::try_parse_from(&args).is_err(),
                    "{} --{long} {v} was accepted",
                    sub.get_name()
                );
            }
            let mut args = base.clone();
            args.push(format!("--{long}={default}"));
            Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
    assert_covers(
        &commands.iter().map(String::as_str).collect::<Vec<_>>(),
        "numeric ranges",
    );
    assert!(checked >= 15, "only {checked} numeric flags found");
}

/// Kind: an output that cannot be written. Every command that writes names the flag and fails
/// before any work (its inputs here do not even exist, so reaching them would name them instead).
#[test]
fn every_command_checks_its_outputs_before_the_work() {
    let t = Tmp::new("walk-out");
    std::fs::write(t.join("file"), b"x").unwrap();
    let bad = t.join("file/sub/out.json");
    let b = s(&bad);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "cluster",
            vec!["cluster", "--features", "/no/input", "--out", b],
            "--out",
        ),
        (
            "evaluate",
            vec![
                "evaluate",
                "--query",
                "/no/q",
                "--gallery",
                "/no/g",
                "--json",
                b,
            ],
            "--json",
        ),
        (
            "extract",
            vec![
                "extract",
                "--arch",
                "resnet18",
                "--weights",
                "/no/w",
                "--images",
                "/no/i",
                "--out",
                b,
            ],
            "--out",
        ),
        ("synth", vec!["synth", "--out", b], "file/sub/out.json"),
        (
            "train",
            vec![
                "train", "--method", "source", "--source", "/no/s", "--out", b,
            ],
            "file/sub/out.json",
        ),
        ("convert", vec!["convert", "/no/in", b], "OUTPUT"),
        (
            "bench",
            vec!["bench", "--kernels-only", "--json", b],
            "--json",
        ),
        ("demo", vec!["demo", "--out", b], "file/sub/out.json"),
        // Commands without outputs.
        ("check-data", vec![], ""),
        ("info", vec![], ""),
    ];
    assert_covers(
        &cases.iter().map(|c| c.0).collect::<Vec<_>>(),
        "unwritable output",
    );
    for (name, args, named) in cases.iter().filter(|c| !c.1.is_empty()) {
        let r = unreid(args);
        assert!(!r.ok, "{name}");
        assert!(
            r.stderr.contains(named) && !r.stderr.contains("/no/"),
            "{name}: {}",
            r.stderr
        );
    }
    let r = unreid(&[
        "evaluate",
        "--query",
        "/no/q",
        "--gallery",
        "/no/g",
        "--visualize",
        b,
    ]);
    assert!(
        !r.ok && r.stderr.contains("--visualize") && !r.stderr.contains("/no/"),
        "{}",
        r.stderr
    );
}

/// Kind: a closed stdout. Every command that prints ends quietly (no panic message).
#[cfg(unix)]
#[test]
fn every_command_ends_quietly_on_a_closed_stdout() {
    use std::io::Read;
    let t = Tmp::new("walk-pipe");
    market(&t.join("m"));
    let f = features(&[1, 2, 1, 2], &[0, 0, 1, 1], vec![], None);
    f.save(t.join("f.st")).unwrap();
    let (m, fs, o, syn) = (t.join("m"), t.join("f.st"), t.join("l.json"), t.join("syn"));
    let w = weights();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("check-data", vec!["check-data", s(&m)]),
        (
            "cluster",
            vec![
                "cluster",
                "--features",
                s(&fs),
                "--algo",
                "kmeans",
                "--k",
                "2",
                "--device",
                "cpu",
                "--out",
                s(&o),
            ],
        ),
        (
            "evaluate",
            vec![
                "evaluate",
                "--query",
                s(&fs),
                "--gallery",
                s(&fs),
                "--device",
                "cpu",
            ],
        ),
        (
            "synth",
            vec![
                "synth",
                "--out",
                s(&syn),
                "--ids",
                "4",
                "--cameras",
                "2",
                "--size",
                "32x16",
                "--images-per-id",
                "4-4",
            ],
        ),
        ("info", vec!["info"]),
        (
            "extract",
            vec![
                "extract",
                "--arch",
                "mobilenet_v2",
                "--weights",
                s(&w),
                "--images",
                s(&m),
                "--height",
                "32",
                "--width",
                "16",
                "--device",
                "cpu",
                "--out",
                s(&o),
            ],
        ),
    ];
    // train, demo, bench and convert are long runs or need real inputs: not walked here.
    let mut listed: Vec<&str> = cases.iter().map(|c| c.0).collect();
    listed.extend(["train", "demo", "bench", "convert"]);
    assert_covers(&listed, "closed stdout");
    for (name, args) in &cases {
        let mut child = Command::new(env!("CARGO_BIN_EXE_unreid"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        child.wait().unwrap();
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{name}: {stderr}"
        );
    }
}
