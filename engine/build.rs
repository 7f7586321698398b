//! Builds the built-in strategy plugins for `wasm32-unknown-unknown` so that
//! `cargo build` is the only command a user needs; the engine embeds them.
//!
//! The nested cargo uses its own target directory (`<workspace>/target/plugins`),
//! so it never waits on the lock the outer build holds.
//!
//! rustup adds a `rust-toolchain.toml`'s `targets` only when it installs the
//! toolchain; a machine that already had the pinned toolchain lacks the wasm
//! target. So before building, this script looks for the target in the
//! compiler's sysroot and, when it is missing, runs
//! `rustup target add wasm32-unknown-unknown --toolchain <pinned>` itself;
//! without rustup it stops with one sentence saying what to install.

use std::{env, fs, path::PathBuf, process::Command};

/// Crates under `plugins/` that are strategies, embedded by name.
const BUILTIN: &[&str] = &["best-price", "split", "reliability-weighted"];

/// `opt-level` of the built-in plugins: 3 cut a warm call's guest work (fuel)
/// by a third against the profile's "s" (best-price, 2 venues: 20.5k → 12.9k).
const PLUGIN_OPT_LEVEL: &str = "3";

/// The guest's shadow stack (in linear memory), bytes; rustc's default is
/// 1 MiB. The built-ins need a few KiB; a deeper recursion traps cleanly.
const PLUGIN_STACK_BYTES: u32 = 64 * 1024;

/// The target the strategy plugins are built for (ARCHITECTURE.md, plugin ABI v1 and v2).
const WASM_TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("engine/ sits in the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Inside this workspace even when CARGO_TARGET_DIR points elsewhere: two
    // checkouts sharing a target dir must not overwrite each other's modules.
    let target_dir = workspace.join("target").join("plugins");

    for watched in ["plugins/abi", "plugins/sdk", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(watched).display());
    }
    for name in BUILTIN {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join("plugins").join(name).display()
        );
    }

    ensure_wasm_target(&workspace);

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&workspace)
        .args(["build", "--profile", "plugin", "--target", "wasm32-unknown-unknown"])
        .arg("--target-dir")
        .arg(&target_dir);
    for name in BUILTIN {
        command.args(["-p", name]);
    }
    // Speed over size for the built-ins (the `plugin` profile says "s"), and
    // a 64 KiB guest stack instead of rustc's 1 MiB, so that all a call
    // touches sits in the first pages of linear memory, which the host keeps
    // resident between calls (`KEEP_RESIDENT_BYTES` in plugins/host.rs).
    // Measured on `cargo bench --bench strategy` (ops/benchmarks.md).
    command.env("CARGO_PROFILE_PLUGIN_OPT_LEVEL", PLUGIN_OPT_LEVEL).env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
        format!("-C link-arg=-zstack-size={PLUGIN_STACK_BYTES}"),
    );
    // Flags meant for the host build (and clippy's wrapper) must not leak
    // into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        command.env_remove(var);
    }
    let status = command.status().expect("failed to run cargo for the wasm plugins");
    assert!(
        status.success(),
        "building the strategy plugins for {WASM_TARGET} failed (the cargo output above says why)"
    );

    let mut table = String::from("/// Strategy plugins built from `plugins/` and embedded: (name, module bytes).\n");
    table.push_str("pub const BUILTIN_PLUGINS: &[(&str, &[u8])] = &[\n");
    for name in BUILTIN {
        let file = format!("{}.wasm", name.replace('-', "_"));
        let built = target_dir.join("wasm32-unknown-unknown/plugin").join(&file);
        let embedded = out_dir.join(&file);
        fs::copy(&built, &embedded).unwrap_or_else(|e| panic!("copying {}: {e}", built.display()));
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            embedded.display().to_string()
        ));
    }
    table.push_str("];\n");
    fs::write(out_dir.join("builtin_plugins.rs"), table).expect("writing builtin_plugins.rs");
}

/// Makes sure the compiler that builds the plugins has the wasm standard
/// library, adding it with rustup when it is missing.
fn ensure_wasm_target(workspace: &std::path::Path) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let has_target = || {
        Command::new(&rustc)
            .args(["--print", "sysroot"])
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            .is_some_and(|sysroot| sysroot.join("lib/rustlib").join(WASM_TARGET).join("lib").is_dir())
    };
    if has_target() {
        return;
    }
    // rustup's proxy tells the processes it starts which toolchain it chose;
    // without it, the pin in rust-toolchain.toml is the one cargo would use.
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok().or_else(|| pinned_channel(workspace));
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", WASM_TARGET]);
    if let Some(toolchain) = &toolchain {
        rustup.args(["--toolchain", toolchain]);
    }
    println!("cargo:warning=adding the {WASM_TARGET} target with rustup (first build on this toolchain)");
    match rustup.status() {
        Ok(status) if status.success() && has_target() => {}
        Ok(_) => panic!(
            "the Rust target {WASM_TARGET} is missing and `rustup target add {WASM_TARGET}{}` failed; \
             run it by hand and build again",
            toolchain.map(|t| format!(" --toolchain {t}")).unwrap_or_default()
        ),
        Err(_) => panic!(
            "the Rust target {WASM_TARGET} is missing and rustup is not installed: install the \
             {WASM_TARGET} standard library for this compiler (with rustup: \
             `rustup target add {WASM_TARGET}`) and build again"
        ),
    }
}

/// The `channel` that `rust-toolchain.toml` pins, if it can be read.
fn pinned_channel(workspace: &std::path::Path) -> Option<String> {
    let text = fs::read_to_string(workspace.join("rust-toolchain.toml")).ok()?;
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("channel")?.trim_start().strip_prefix('=')?;
        Some(value.trim().trim_matches('"').to_string())
    })
}
