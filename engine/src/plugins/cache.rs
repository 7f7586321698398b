//! Compiled modules, cached so that a restart or a reload does not compile
//! again: in memory by module SHA-256, and on disk under
//! `<data_dir>/plugin-cache/` keyed by the module's SHA-256 and the engine's
//! compatibility key (swapline version, wasmtime version and the compile
//! settings). Compilation itself runs under `plugins.compile_timeout`.
//!
//! On-disk entries are `sha256(artifact) ‖ artifact`: an entry whose digest
//! does not match (torn write, disk corruption) is deleted and the module
//! compiled again. The only `unsafe` of the crate lives here, in
//! [`deserialize_own_artifact`].

use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};
use wasmtime::{Engine, Module};

/// Where compiled modules are found or put.
pub(super) struct ModuleCache {
    memory: Mutex<HashMap<String, Module>>,
    dir: Option<PathBuf>,
    engine_key: String,
}

/// Why a module could not be produced.
type CacheResult = Result<Module, String>;

impl ModuleCache {
    /// A cache for `engine`; on disk only when `dir` is given.
    pub(super) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ModuleCache {
            memory: Mutex::new(HashMap::new()),
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    fn file(&self, sha256: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{sha256}-{}.cwasm", self.engine_key)))
    }

    /// The compiled module for `bytes` (whose digest is `sha256`): from
    /// memory, from disk, or compiled within `timeout`.
    pub(super) fn get_or_compile(&self, engine: &Engine, sha256: &str, bytes: &[u8], timeout: Duration) -> CacheResult {
        if let Some(module) = self.lock().get(sha256) {
            return Ok(module.clone());
        }
        let file = self.file(sha256);
        let module = match file.as_deref().and_then(|path| read_entry(engine, path)) {
            Some(module) => {
                tracing::debug!(sha256, "compiled module read from the disk cache");
                module
            }
            None => {
                let module = compile(engine, bytes, timeout)?;
                if let Some(path) = &file
                    && let Err(e) = write_entry(path, &module)
                {
                    tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled module");
                }
                module
            }
        };
        self.lock().insert(sha256.to_owned(), module.clone());
        Ok(module)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Module>> {
        // Modules are immutable handles: a panic elsewhere leaves the map
        // consistent.
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the module with this digest is compiled in memory.
    #[cfg(test)]
    pub(super) fn holds(&self, sha256: &str) -> bool {
        self.lock().contains_key(sha256)
    }
}

/// Compiles on a helper thread and gives up after `timeout`: Cranelift
/// cannot be interrupted, so a pathological module only costs that thread.
fn compile(engine: &Engine, bytes: &[u8], timeout: Duration) -> CacheResult {
    let (tx, rx) = mpsc::channel();
    let (engine, bytes) = (engine.clone(), Arc::<[u8]>::from(bytes));
    std::thread::Builder::new()
        .name("wasm-compile".into())
        .spawn(move || {
            let _ = tx.send(Module::new(&engine, &bytes).map_err(|e| format!("{e:#}")));
        })
        .map_err(|e| format!("compile thread: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(format!(
            "compiling took longer than plugins.compile_timeout = {}",
            humantime::format_duration(timeout)
        )),
    }
}

fn write_entry(path: &Path, module: &Module) -> Result<(), String> {
    let artifact = module.serialize().map_err(|e| e.to_string())?;
    let dir = path.parent().ok_or("cache path has no parent")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut entry = Sha256::digest(&artifact).to_vec();
    entry.extend_from_slice(&artifact);
    // Write then rename: a reader never sees half a file under the final name.
    let partial = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&partial, &entry).map_err(|e| e.to_string())?;
    std::fs::rename(&partial, path).map_err(|e| e.to_string())
}

fn read_entry(engine: &Engine, path: &Path) -> Option<Module> {
    let entry = std::fs::read(path).ok()?;
    let intact = entry.len() > 32 && Sha256::digest(&entry[32..]).as_slice() == &entry[..32];
    let module = intact.then(|| deserialize_own_artifact(engine, &entry[32..])).flatten();
    if module.is_none() {
        tracing::warn!(path = %path.display(), "discarding a damaged or incompatible compiled-module cache entry");
        let _ = std::fs::remove_file(path);
    }
    module
}

/// Turns an artifact this cache wrote back into a module.
///
/// `Module::deserialize` is `unsafe` because it maps the bytes as machine
/// code without validating them: hostile bytes would run with the engine's
/// privileges. This is the crate's one `unsafe` block (the crate root denies
/// `unsafe_code`; this function alone is allowed it).
#[allow(unsafe_code)]
fn deserialize_own_artifact(engine: &Engine, artifact: &[u8]) -> Option<Module> {
    // SAFETY: `artifact` comes only from `read_entry`, i.e. from a file in
    // the engine's own cache directory (under `data_dir`, which must be
    // writable only by the engine's user), written by `write_entry` from
    // `Module::serialize`, and its SHA-256 matched the digest stored with
    // it, so it is byte for byte what this cache wrote. The file name carries
    // the engine's compatibility key and wasmtime re-checks the artifact's
    // header (version, target, settings) and refuses a mismatch. Guest
    // bytes never reach this function: they are compiled, not deserialized.
    unsafe { Module::deserialize(engine, artifact) }.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &[u8] = b"(module (func (export \"f\") (result i32) i32.const 7))";

    #[test]
    fn a_compiled_module_is_reused_from_disk_by_a_new_cache() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let first = ModuleCache::new(&engine, Some(dir.path().to_owned()));
        first
            .get_or_compile(&engine, "abc", WAT, Duration::from_secs(30))
            .unwrap();
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "one entry on disk");

        // A new cache (a restart) finds it on disk: even bytes that would not
        // compile are not looked at.
        let second = ModuleCache::new(&engine, Some(dir.path().to_owned()));
        let module = second
            .get_or_compile(&engine, "abc", b"not wasm", Duration::from_secs(30))
            .unwrap();
        assert!(module.get_export("f").is_some());
        assert!(second.holds("abc"));
    }

    #[test]
    fn a_damaged_entry_is_discarded_and_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = ModuleCache::new(&engine, Some(dir.path().to_owned()));
        cache
            .get_or_compile(&engine, "abc", WAT, Duration::from_secs(30))
            .unwrap();
        let path = cache.file("abc").unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();

        let fresh = ModuleCache::new(&engine, Some(dir.path().to_owned()));
        let error = fresh
            .get_or_compile(&engine, "abc", b"not wasm", Duration::from_secs(30))
            .unwrap_err();
        assert!(!error.is_empty(), "fell back to compiling the (bad) bytes");
        assert!(!path.exists(), "the damaged entry was removed");
        fresh
            .get_or_compile(&engine, "abc", WAT, Duration::from_secs(30))
            .unwrap();
    }
}
