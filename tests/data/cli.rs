use super::common::TempDir;
use clap::Parser;
use unreid::cli::{Cli, Command};

fn parse_error(args: &[&str]) -> String {
    Cli::try_parse_from(args)
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn synth_flags_are_validated_with_the_flag_named() {
    let msg = parse_error(&["unreid", "synth", "--out", "x", "--size", "128"]);
    assert!(msg.contains("--size") && msg.contains("HxW"), "{msg}");
    let msg = parse_error(&["unreid", "synth", "--out", "x", "--size", "128xabc"]);
    assert!(msg.contains("--size") && msg.contains("abc"), "{msg}");
    let msg = parse_error(&["unreid", "synth", "--out", "x", "--images-per-id", "8"]);
    assert!(msg.contains("--images-per-id"), "{msg}");
    let msg = parse_error(&["unreid", "check-data", "d", "--layout", "cuhk"]);
    assert!(
        msg.contains("--layout") && msg.contains("market1501"),
        "{msg}"
    );
    // Ranges clap checks while parsing name the flag.
    for (flag, value) in [("--ids", "2"), ("--cameras", "12")] {
        let msg = parse_error(&["unreid", "synth", "--out", "x", flag, value]);
        assert!(msg.contains(flag), "{flag} {value}: {msg}");
    }
    // A size below the minimum parses and is refused by the config check, naming the flag.
    let cli = Cli::try_parse_from(["unreid", "synth", "--out", "x", "--size", "8x4"]).unwrap();
    let Command::Synth(args) = cli.command else {
        panic!("synth expected")
    };
    let msg = args.config().validate().unwrap_err().to_string();
    assert!(msg.contains("--size"), "--size 8x4: {msg}");
}

#[test]
fn synth_then_check_data_round_trip() {
    let tmp = TempDir::new("cli-synth");
    let out = tmp.path().to_str().unwrap();
    let cli = Cli::try_parse_from([
        "unreid",
        "synth",
        "--out",
        out,
        "--ids",
        "6",
        "--cameras",
        "3",
        "--size",
        "64x32",
        "--seed",
        "4",
    ])
    .unwrap();
    unreid::cli::run(cli).unwrap();
    for domain in ["source", "target"] {
        let dir = tmp.path().join(domain);
        let cli = Cli::try_parse_from(["unreid", "check-data", dir.to_str().unwrap()]).unwrap();
        unreid::cli::run(cli).unwrap();
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("synth.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["seed"], 4);
    assert_eq!(manifest["ids"], 6);
    // No staging folders are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
