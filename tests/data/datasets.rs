use super::common::{touch_images, write_jpeg, TempDir};
use unreid::data::datasets::{
    load, parse_market_name, parse_msmt_camera, DataError, DatasetSpec, Layout, ListFiles,
};
use unreid::data::decode::decode_rgb;

fn market_fixture(root: &std::path::Path) {
    touch_images(
        root,
        &[
            "bounding_box_train/0002_c1s1_000451_03.jpg",
            "bounding_box_train/0002_c2s1_000551_01.jpg",
            "bounding_box_train/0007_c3s1_000101_01.jpg",
            "bounding_box_train/0005_c6s2_000101_01.jpg",
            "bounding_box_train/Thumbs.db",
            "query/0003_c1s1_000001_00.jpg",
            "query/0004_c4s1_000001_00.jpg",
            "bounding_box_test/0003_c2s1_000002_01.jpg",
            "bounding_box_test/0004_c5s1_000002_01.jpg",
            "bounding_box_test/0000_c1s1_000003_01.jpg",
            "bounding_box_test/-1_c1s1_000004_01.jpg",
            "bounding_box_test/-1_c3s1_000005_02.jpg",
        ],
    );
}

#[test]
fn market_names_parse_like_the_reference_regex() {
    assert_eq!(parse_market_name("0002_c1s1_000451_03.jpg"), Some((2, 1)));
    assert_eq!(parse_market_name("-1_c3s1_000005_02.jpg"), Some((-1, 3)));
    assert_eq!(parse_market_name("0000_c6s2_000101_01.jpg"), Some((0, 6)));
    assert_eq!(parse_market_name("0001_c2_f0046182.jpg"), Some((1, 2)));
    // Market-style MSMT17 has two-digit cameras.
    assert_eq!(parse_market_name("0123_c14_0007.jpg"), Some((123, 14)));
    // The leftmost `[-\d]+_c\d` match counts, even after a prefix.
    assert_eq!(parse_market_name("img0042_c5s3_01.jpg"), Some((42, 5)));
    assert_eq!(parse_market_name("person.jpg"), None);
    assert_eq!(parse_market_name("0002_x1s1.jpg"), None);
    assert_eq!(parse_market_name("1-2_c1s1.jpg"), None);
    assert_eq!(
        parse_msmt_camera("0000_000_01_0303morning_0015_0.jpg"),
        Some(1)
    );
    assert_eq!(
        parse_msmt_camera("0000_000_15_0303noon_0001_1.jpg"),
        Some(15)
    );
    assert_eq!(parse_msmt_camera("0000.jpg"), None);
}

#[test]
fn market_layout_drops_junk_keeps_distractors_and_relabels_train() {
    let tmp = TempDir::new("market");
    let root = tmp.path().join("Market-1501-v15.09.15");
    market_fixture(&root);
    // Point at the parent: the official archive folder is found.
    let ds = load(&DatasetSpec::new(tmp.path(), Layout::Auto)).unwrap();
    assert_eq!(ds.layout, Layout::Market1501);
    assert_eq!(ds.root, root);
    assert_eq!(ds.num_train_pids, 3);
    let train: Vec<(i32, i32, u32)> = ds
        .train
        .iter()
        .map(|it| (it.raw_pid, it.pid, it.camid))
        .collect();
    // Sorted by file name; raw pids 2, 5, 7 -> labels 0, 1, 2; cameras 0-based.
    assert_eq!(train, vec![(2, 0, 0), (2, 0, 1), (5, 1, 5), (7, 2, 2)]);
    let gallery: Vec<(i32, u32)> = ds.gallery.iter().map(|it| (it.pid, it.camid)).collect();
    assert_eq!(
        gallery,
        vec![(0, 0), (3, 1), (4, 4)],
        "junk -1 dropped, distractor 0 kept"
    );
    let query: Vec<i32> = ds.query.iter().map(|it| it.pid).collect();
    assert_eq!(query, vec![3, 4]);
    assert!(ds.train.iter().all(|it| it.domain == 0));
    let table = ds.summary_table();
    assert!(
        table.contains("subset   | # ids | # images | # cameras"),
        "{table}"
    );
    assert!(
        table.contains("  train    |     3 |        4 |         4"),
        "{table}"
    );
    assert!(
        table.contains("  gallery  |     3 |        3 |         3"),
        "{table}"
    );
}

#[test]
fn duke_is_detected_from_its_names_and_parsed() {
    let tmp = TempDir::new("dk");
    touch_images(
        tmp.path(),
        &[
            "bounding_box_train/0001_c2_f0046182.jpg",
            "bounding_box_train/0001_c8_f0046300.jpg",
            "query/0005_c1_f0000001.jpg",
            "bounding_box_test/0005_c7_f0000002.jpg",
        ],
    );
    let mut spec = DatasetSpec::new(tmp.path(), Layout::Auto);
    spec.domain = 1;
    let ds = load(&spec).unwrap();
    assert_eq!(ds.layout, Layout::Duke);
    assert_eq!(
        ds.train.iter().map(|it| it.camid).collect::<Vec<_>>(),
        vec![1, 7]
    );
    assert!(ds.all_items().all(|it| it.domain == 1));
}

fn msmt_fixture(root: &std::path::Path) {
    touch_images(
        root,
        &[
            "train/0000/0000_000_01_0303morning_0015_0.jpg",
            "train/0000/0000_001_05_0303morning_0016_0.jpg",
            "train/0003/0003_000_15_0303noon_0001_1.jpg",
            "test/0000/0000_000_02_0303afternoon_0001_0.jpg",
            "test/0000/0000_001_09_0303afternoon_0002_0.jpg",
        ],
    );
    std::fs::write(
        root.join("list_train.txt"),
        "0000/0000_000_01_0303morning_0015_0.jpg 0\n0003/0003_000_15_0303noon_0001_1.jpg 3\n",
    )
    .unwrap();
    std::fs::write(
        root.join("list_val.txt"),
        "0000/0000_001_05_0303morning_0016_0.jpg 0\n\n",
    )
    .unwrap();
    std::fs::write(
        root.join("list_query.txt"),
        "0000/0000_000_02_0303afternoon_0001_0.jpg 0\n",
    )
    .unwrap();
    std::fs::write(
        root.join("list_gallery.txt"),
        "0000/0000_001_09_0303afternoon_0002_0.jpg 0\n",
    )
    .unwrap();
}

#[test]
fn msmt_lists_merge_train_and_val_and_take_the_camera_from_the_name() {
    let tmp = TempDir::new("msmt");
    let root = tmp.path().join("MSMT17_V1");
    msmt_fixture(&root);
    let ds = load(&DatasetSpec::new(tmp.path(), Layout::Auto)).unwrap();
    assert_eq!(ds.layout, Layout::Msmt17);
    assert_eq!(ds.train.len(), 3, "train + val");
    assert_eq!(ds.num_train_pids, 2);
    let train: Vec<(i32, u32)> = ds.train.iter().map(|it| (it.pid, it.camid)).collect();
    assert_eq!(train, vec![(0, 0), (1, 14), (0, 4)]);
    assert_eq!(
        ds.train[0].path,
        root.join("train/0000/0000_000_01_0303morning_0015_0.jpg")
    );
    assert_eq!(ds.query[0].camid, 1);
    assert_eq!(ds.gallery[0].camid, 8);
    assert_eq!(
        ds.query[0].path,
        root.join("test/0000/0000_000_02_0303afternoon_0001_0.jpg")
    );
}

#[test]
fn market_style_msmt_reads_two_digit_cameras() {
    let tmp = TempDir::new("msmt-market");
    let root = tmp.path().join("MSMT17_V1");
    touch_images(
        &root,
        &[
            "bounding_box_train/0000_c14_0001.jpg",
            "query/0001_c3_0001.jpg",
            "bounding_box_test/0001_c15_0002.jpg",
        ],
    );
    let ds = load(&DatasetSpec::new(tmp.path(), Layout::Auto)).unwrap();
    assert_eq!(ds.layout, Layout::Msmt17Market);
    assert_eq!(ds.train[0].camid, 13);
    assert_eq!(ds.gallery[0].camid, 14);
}

#[test]
fn generic_list_layout_reads_paths_pids_and_cameras() {
    let tmp = TempDir::new("list");
    touch_images(
        tmp.path(),
        &["imgs/a.jpg", "imgs/b.png.jpg", "imgs/c.jpg", "imgs/q.jpg"],
    );
    let list = tmp.path().join("train.txt");
    std::fs::write(
        &list,
        "# path pid camid\nimgs/a.jpg 10 0\nimgs/b.png.jpg 4 3\nimgs/c.jpg -1 1\n",
    )
    .unwrap();
    let qlist = tmp.path().join("query.txt");
    std::fs::write(&qlist, "imgs/q.jpg 0 2\n").unwrap();
    let spec = DatasetSpec {
        root: tmp.path().to_path_buf(),
        layout: Layout::Auto,
        lists: ListFiles {
            train: Some(list),
            query: Some(qlist),
            gallery: None,
        },
        domain: 0,
    };
    let ds = load(&spec).unwrap();
    assert_eq!(ds.layout, Layout::List);
    let train: Vec<(i32, i32, u32)> = ds
        .train
        .iter()
        .map(|it| (it.raw_pid, it.pid, it.camid))
        .collect();
    assert_eq!(
        train,
        vec![(10, 1, 0), (4, 0, 3)],
        "junk dropped, relabelled by increasing raw pid"
    );
    assert_eq!(ds.query.len(), 1);
    assert!(ds.gallery.is_empty());
}

fn error_of(spec: &DatasetSpec) -> String {
    load(spec)
        .expect_err("this input must be rejected")
        .to_string()
}

#[test]
fn missing_folder_error_names_the_folder() {
    let tmp = TempDir::new("missing");
    touch_images(
        tmp.path(),
        &[
            "bounding_box_train/0002_c1s1_000451_03.jpg",
            "query/0002_c2s1_000451_03.jpg",
        ],
    );
    let msg = error_of(&DatasetSpec::new(tmp.path(), Layout::Market1501));
    assert!(
        msg.contains("not found")
            && msg.contains(&tmp.path().join("bounding_box_test").display().to_string()),
        "{msg}"
    );
    let msg = error_of(&DatasetSpec::new(tmp.path().join("nope"), Layout::Auto));
    assert!(msg.contains("nope"), "{msg}");
    let empty = TempDir::new("unknown");
    let msg = error_of(&DatasetSpec::new(empty.path(), Layout::Auto));
    assert!(
        msg.contains("cannot detect") && msg.contains(&empty.path().display().to_string()),
        "{msg}"
    );
}

#[test]
fn unparsable_name_error_names_the_file() {
    let tmp = TempDir::new("badname");
    touch_images(
        tmp.path(),
        &[
            "bounding_box_train/0002_c1s1_000451_03.jpg",
            "bounding_box_train/holiday.jpg",
            "query/0002_c2s1_000451_03.jpg",
            "bounding_box_test/0002_c3s1_000451_03.jpg",
        ],
    );
    let msg = error_of(&DatasetSpec::new(tmp.path(), Layout::Market1501));
    assert!(
        msg.contains("holiday.jpg") && msg.contains("cannot parse"),
        "{msg}"
    );
    // Camera 0 does not exist in 1-based names.
    let tmp = TempDir::new("cam0");
    touch_images(
        tmp.path(),
        &[
            "bounding_box_train/0002_c0s1_000451_03.jpg",
            "query/x",
            "bounding_box_test/y",
        ],
    );
    let msg = error_of(&DatasetSpec::new(tmp.path(), Layout::Market1501));
    assert!(msg.contains("0002_c0s1_000451_03.jpg"), "{msg}");
}

#[test]
fn empty_split_error_names_the_split_folder() {
    let tmp = TempDir::new("empty");
    touch_images(
        tmp.path(),
        &[
            "bounding_box_train/0002_c1s1_000451_03.jpg",
            "bounding_box_test/0002_c3s1_000451_03.jpg",
        ],
    );
    std::fs::create_dir_all(tmp.path().join("query")).unwrap();
    let msg = error_of(&DatasetSpec::new(tmp.path(), Layout::Market1501));
    assert!(
        msg.contains("query split has no images")
            && msg.contains(&tmp.path().join("query").display().to_string()),
        "{msg}"
    );
    // Only junk counts as empty too.
    std::fs::remove_dir_all(tmp.path().join("query")).unwrap();
    touch_images(tmp.path(), &["query/-1_c1s1_000001_00.jpg"]);
    let msg = error_of(&DatasetSpec::new(tmp.path(), Layout::Market1501));
    assert!(msg.contains("query split has no images"), "{msg}");
}

#[test]
fn bad_list_lines_name_the_file_and_line() {
    let tmp = TempDir::new("badlist");
    let list = tmp.path().join("train.txt");
    let spec = |lists: ListFiles| DatasetSpec {
        root: tmp.path().to_path_buf(),
        layout: Layout::List,
        lists,
        domain: 0,
    };
    for (content, line, reason) in [
        ("a.jpg 1 0\nb.jpg one 0\n", 2, "pid is not an integer"),
        (
            "a.jpg 1 0\n\n# comment\nb.jpg 1\n",
            4,
            "expected `<relative path> <pid> <camid>`",
        ),
        ("a.jpg 1 -3\n", 1, "camid"),
        ("a.jpg 1 0 extra\n", 1, "expected"),
    ] {
        std::fs::write(&list, content).unwrap();
        let msg = error_of(&spec(ListFiles {
            train: Some(list.clone()),
            ..Default::default()
        }));
        assert!(
            msg.contains(&format!("{}:{line}:", list.display())) && msg.contains(reason),
            "{content:?}: {msg}"
        );
    }
    let msg = error_of(&spec(ListFiles {
        train: Some(tmp.path().join("nolist.txt")),
        ..Default::default()
    }));
    assert!(
        msg.contains("list file not found") && msg.contains("nolist.txt"),
        "{msg}"
    );
    std::fs::write(&list, "# nothing\n").unwrap();
    let msg = error_of(&spec(ListFiles {
        train: Some(list.clone()),
        ..Default::default()
    }));
    assert!(
        msg.contains("train split has no images") && msg.contains("train.txt"),
        "{msg}"
    );

    // MSMT: a line without a pid, and a file name without a camera field.
    let root = tmp.path().join("MSMT17_V1");
    msmt_fixture(&root);
    std::fs::write(
        root.join("list_query.txt"),
        "0000/0000_000_02_0303afternoon_0001_0.jpg\n",
    )
    .unwrap();
    let msg = error_of(&DatasetSpec::new(&root, Layout::Msmt17));
    assert!(
        msg.contains("list_query.txt:1:") && msg.contains("<pid>"),
        "{msg}"
    );
    std::fs::write(
        root.join("list_query.txt"),
        "0000/0000_000_02_0303afternoon_0001_0.jpg 0\n0000/bad.jpg 0\n",
    )
    .unwrap();
    let msg = error_of(&DatasetSpec::new(&root, Layout::Msmt17));
    assert!(
        msg.contains("list_query.txt:2:") && msg.contains("camera"),
        "{msg}"
    );
}

#[test]
fn truncated_and_garbage_images_are_reported_with_their_path() {
    let tmp = TempDir::new("truncated");
    let good = tmp.path().join("good.jpg");
    write_jpeg(&good, 10);
    assert!(decode_rgb(&good).is_ok());
    let bytes = std::fs::read(&good).unwrap();
    let cut = tmp.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = decode_rgb(&cut).unwrap_err();
    assert!(matches!(err, DataError::BadImage { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("cut.jpg") && msg.contains("truncated"),
        "{msg}"
    );
    let garbage = tmp.path().join("garbage.jpg");
    std::fs::write(&garbage, b"this is not an image").unwrap();
    assert!(decode_rgb(&garbage)
        .unwrap_err()
        .to_string()
        .contains("garbage.jpg"));
    let empty = tmp.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    assert!(decode_rgb(&empty)
        .unwrap_err()
        .to_string()
        .contains("empty.png"));
    // A PNG cut short.
    let png = tmp.path().join("cut.png");
    let img = image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 5) as u8, (x ^ y) as u8])
    });
    img.save(&png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    std::fs::write(&png, &bytes[..bytes.len() / 2]).unwrap();
    assert!(decode_rgb(&png)
        .unwrap_err()
        .to_string()
        .contains("cut.png"));
    let missing = tmp.path().join("missing.jpg");
    assert!(decode_rgb(&missing)
        .unwrap_err()
        .to_string()
        .contains("missing.jpg"));
}

#[test]
fn check_data_lists_every_bad_image_and_fails() {
    let tmp = TempDir::new("checkdata");
    market_fixture(tmp.path());
    let args = unreid::cli::check_data::Args {
        dir: tmp.path().to_path_buf(),
        dataset: unreid::cli::args::DatasetArgs {
            layout: Some(Layout::Auto),
            ..Default::default()
        },
    };
    unreid::cli::check_data::run(args.clone()).expect("a clean dataset passes");
    let victim = tmp.path().join("query/0003_c1s1_000001_00.jpg");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let err =
        unreid::cli::check_data::run(args).expect_err("a truncated image must fail the check");
    assert!(err.to_string().contains("1 of 9 images"), "{err}");
}
