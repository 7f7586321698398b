//! Builds the built-in strategy plugins for `wasm32-unknown-unknown` so that
//! `cargo build` is the only command a user needs; the engine embeds them.
//!
//! The nested cargo uses its own target directory (`<workspace>/target/plugins`),
//! so it never waits on the lock the outer build holds.

use std::{env, fs, path::PathBuf, process::Command};

/// Crates under `plugins/` that are strategies, embedded by name.
const BUILTIN: &[&str] = &["best-price", "split", "reliability-weighted"];

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
        "building the strategy plugins for wasm32-unknown-unknown failed; is the target installed? \
         (`rustup target add wasm32-unknown-unknown`, or let rust-toolchain.toml do it)"
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
