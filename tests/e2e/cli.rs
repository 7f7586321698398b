//! `swapline plugins …` as a user runs it.

use std::process::{Command, Output};

fn swapline(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_swapline"))
        .args(["--profile", "bench"])
        .args(args)
        .current_dir(dir.path())
        .env_remove("SWAPLINE_PROFILE")
        .output()
        .expect("running swapline")
}

#[test]
fn plugins_list_shows_builtins_with_digest_abi_and_exports() {
    let output = swapline(&["plugins", "list"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "best-price",
        "split",
        "reliability-weighted",
        "abi          v2 (flat input)",
        "swapline_params_schema",
    ] {
        assert!(stdout.contains(expected), "{expected} missing from:\n{stdout}");
    }
}

#[test]
fn plugins_test_routes_an_input_file_and_reports_fuel_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("sample.json");
    let mut sample = swapline::plugins::cli::sample_input();
    sample.order.amount_in = swapline_abi::Units(2_000_000_000);
    std::fs::write(&input, serde_json::to_vec(&sample).unwrap()).unwrap();
    let output = swapline(&["plugins", "test", "best-price", "--input", input.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\"amountIn\": \"2000000000\""), "{stdout}");
    assert!(stdout.contains("host check passed"), "{stdout}");
    assert!(stdout.contains("fuel used"), "{stdout}");
    assert!(stdout.contains("time"), "{stdout}");
}

#[test]
fn plugins_check_refuses_a_module_importing_wasi() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasi.wasm");
    std::fs::write(
        &path,
        "(module (import \"wasi_snapshot_preview1\" \"fd_write\" (func)))",
    )
    .unwrap();
    let output = swapline(&["plugins", "check", path.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("import wasi_snapshot_preview1.fd_write is not allowed"),
        "{stderr}"
    );
}

/// The problem lines of a refused run (`  - key: …`), in order.
fn problems(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("- ").map(str::to_owned))
        .collect()
}

#[test]
fn config_check_refuses_what_the_worker_and_serve_refuse_with_the_same_words() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    // A DLMM pool without a price: only start-up used to find it.
    std::fs::write(
        &bad,
        "[[venues.pools]]\nkind = \"dlmm\"\nvenue = \"meteora\"\nbase = \"SOL\"\nquote = \"USDC\"\nprice = 0.0\n\
         bin_step_bps = 10\nbins_per_side = 5\nbin_liquidity = 100.0\nbase_fee_bps = 20\nvariable_fee_bps = 0\n\
         max_fee_bps = 100\n",
    )
    .unwrap();
    let config = bad.to_str().unwrap();
    for (check, start) in [
        (
            vec!["config", "check", "--config", config],
            vec!["serve", "--config", config],
        ),
        (vec!["config", "check", "--role", "worker"], vec!["worker"]),
    ] {
        let checked = swapline(&check);
        let started = swapline(&start);
        assert!(
            !checked.status.success() && !started.status.success(),
            "{check:?} / {start:?}"
        );
        let words = problems(&checked);
        assert!(!words.is_empty(), "{}", String::from_utf8_lossy(&checked.stderr));
        assert_eq!(words, problems(&started), "{check:?} and {start:?} disagree");
    }
}

#[test]
fn schemas_command_writes_the_committed_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("schemas");
    let output = swapline(&["schemas", "--out", out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let committed = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas"));
    let mut written = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            std::fs::read_to_string(committed.join(name)).unwrap(),
            "{name:?}"
        );
        written += 1;
    }
    assert_eq!(written, 11, "every generated schema is written");
}
