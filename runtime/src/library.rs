//! Job libraries on the node side: a user's job compiled as a `cdylib` against the `rflink`
//! crate and exported with `rflink::export_jobs!` (the boundary itself is specified in
//! [`rflink::abi`]). Flink's user jar, in Rust.
//!
//! * [`inspect`] reads a library's ABI note **from the file bytes**, without loading it: the
//!   file must be an ELF shared object for this node's architecture, complete (no header points
//!   past its end), exporting the note and the entry point, with this node's ABI version and
//!   build fingerprint (rflink, rustc, target). The JobManager runs it on every upload, the
//!   client and every TaskExecutor before loading. No code of a refused library ever runs.
//! * [`JobLibrary::load`] inspects, then `dlopen`s the file (`RTLD_NOW | RTLD_LOCAL`), reads the
//!   note again from memory, and calls the entry point. Loaded libraries are kept in a
//!   process-wide table keyed by content (the SHA-256, i.e. the [`BlobKey`]): the tasks of one
//!   job, and later jobs with the same library, share one load.
//! * **A library is never unloaded** while the process lives (unloading Rust code with
//!   thread-locals and `'static` data is unsound). A TaskManager that ran many different
//!   libraries is recycled by restarting it.
//!
//! Loading runs the library's ELF initializers and reads files: call [`JobLibrary::load`] from a
//! blocking context (a task thread, `spawn_blocking`), never from an actor.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use object::{Object, ObjectSection, ObjectSymbol};
use rflink::abi::host::Plugin;
use rflink::abi::{
    parse_note, AbiNote, EntryFn, ABI_VERSION, BUILD_FINGERPRINT, ENTRY_SYMBOL, NOTE_LEN,
    NOTE_SYMBOL,
};

use crate::blob::BlobKey;

/// Why a job library was refused. Every variant names the library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LibraryError {
    /// The file could not be read.
    #[error("cannot read job library {library}: {reason}")]
    Read {
        /// The library.
        library: String,
        /// The I/O error.
        reason: String,
    },
    /// Not an ELF shared object.
    #[error("{library} is not a shared library: {reason}")]
    NotSharedLibrary {
        /// The library.
        library: String,
        /// What is wrong.
        reason: String,
    },
    /// The file is shorter than its own headers say (a cut-off upload or copy).
    #[error(
        "{library} is truncated: the file has {size} bytes, its headers describe at least {needed}"
    )]
    Truncated {
        /// The library.
        library: String,
        /// The file's size.
        size: u64,
        /// What its headers need.
        needed: u64,
    },
    /// Built for another CPU.
    #[error("{library} is built for {library_arch}, but this node runs on {host_arch}")]
    WrongArchitecture {
        /// The library.
        library: String,
        /// The library's architecture.
        library_arch: String,
        /// This node's.
        host_arch: String,
    },
    /// A shared library, but not one built with `rflink::export_jobs!`.
    #[error("{library} is not an rflink job library: it does not export {symbol} (export the job registry with rflink::export_jobs!)")]
    NotAJobLibrary {
        /// The library.
        library: String,
        /// The missing symbol.
        symbol: String,
    },
    /// The note is there, the entry point is not.
    #[error("{library} has no entry point: it does not export the function {symbol}")]
    MissingEntryPoint {
        /// The library.
        library: String,
        /// The missing symbol.
        symbol: String,
    },
    /// The note cannot be read.
    #[error("{library} has a malformed ABI note: {reason}")]
    BadNote {
        /// The library.
        library: String,
        /// What is wrong.
        reason: String,
    },
    /// Another ABI version.
    #[error(
        "{library} uses rflink ABI version {library_version}, this node ABI version {host_version}"
    )]
    AbiVersion {
        /// The library.
        library: String,
        /// The library's version.
        library_version: u32,
        /// This node's.
        host_version: u32,
    },
    /// Built with another rflink or compiler.
    #[error("{library} was built with {library_build}, but this node is {host_build}: rebuild the job library against this cluster's rflink with the same Rust toolchain")]
    Fingerprint {
        /// The library.
        library: String,
        /// The library's build fingerprint.
        library_build: String,
        /// This node's.
        host_build: String,
    },
    /// `dlopen` or `dlsym` failed.
    #[error("cannot load {library}: {reason}")]
    Load {
        /// The library.
        library: String,
        /// The loader's message.
        reason: String,
    },
    /// The library's entry point refused this node or failed (its registry panicked, say).
    #[error("{library} failed to start: {reason}")]
    Entry {
        /// The library.
        library: String,
        /// Its message.
        reason: String,
    },
}

/// What [`inspect`] learns from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryInfo {
    /// The library's note: ABI version and build fingerprint (equal to this node's).
    pub note: AbiNote,
}

/// This node's CPU, as `object` names architectures.
fn host_architecture() -> object::Architecture {
    use object::Architecture as A;
    match std::env::consts::ARCH {
        "x86_64" => A::X86_64,
        "x86" => A::I386,
        "aarch64" => A::Aarch64,
        "arm" => A::Arm,
        "riscv64" => A::Riscv64,
        "powerpc64" => A::PowerPc64,
        "s390x" => A::S390x,
        "loongarch64" => A::LoongArch64,
        _ => A::Unknown,
    }
}

fn arch_name(arch: object::Architecture) -> String {
    format!("{arch:?}").to_lowercase()
}

fn read_uint(bytes: &[u8], at: usize, len: usize, little: bool) -> u64 {
    let mut value = 0u64;
    for i in 0..len {
        let byte = u64::from(bytes.get(at + i).copied().unwrap_or(0));
        if little {
            value |= byte << (8 * i);
        } else {
            value = (value << 8) | byte;
        }
    }
    value
}

/// Checks that no ELF header, program header or segment points past the end of the file: a
/// truncated library is named as such instead of failing somewhere in the loader.
fn check_extents(library: &str, bytes: &[u8]) -> Result<(), LibraryError> {
    let not_shared = |reason: &str| LibraryError::NotSharedLibrary {
        library: library.to_string(),
        reason: reason.to_string(),
    };
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(not_shared("it does not start with the ELF magic bytes"));
    }
    let size = bytes.len() as u64;
    let truncated = |needed: u64| LibraryError::Truncated {
        library: library.to_string(),
        size,
        needed,
    };
    let wide = match bytes.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(not_shared("unknown ELF class")),
    };
    let little = match bytes.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err(not_shared("unknown ELF byte order")),
    };
    let header_len: u64 = if wide { 64 } else { 52 };
    if size < header_len {
        return Err(truncated(header_len));
    }
    let b = bytes;
    // (phoff, shoff, phentsize, phnum, shentsize, shnum) offsets for ELF64 / ELF32.
    let (phoff, shoff, phentsize, phnum, shentsize, shnum) = if wide {
        (
            read_uint(b, 32, 8, little),
            read_uint(b, 40, 8, little),
            read_uint(b, 54, 2, little),
            read_uint(b, 56, 2, little),
            read_uint(b, 58, 2, little),
            read_uint(b, 60, 2, little),
        )
    } else {
        (
            read_uint(b, 28, 4, little),
            read_uint(b, 32, 4, little),
            read_uint(b, 42, 2, little),
            read_uint(b, 44, 2, little),
            read_uint(b, 46, 2, little),
            read_uint(b, 48, 2, little),
        )
    };
    let mut needed = header_len;
    let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    needed = needed.max(ph_end);
    if shnum > 0 {
        needed = needed.max(shoff.saturating_add(shentsize.saturating_mul(shnum)));
    }
    if ph_end <= size {
        for i in 0..phnum {
            let at = (phoff + i * phentsize) as usize;
            let (offset, filesz) = if wide {
                (
                    read_uint(b, at + 8, 8, little),
                    read_uint(b, at + 32, 8, little),
                )
            } else {
                (
                    read_uint(b, at + 4, 4, little),
                    read_uint(b, at + 16, 4, little),
                )
            };
            needed = needed.max(offset.saturating_add(filesz));
        }
    }
    if needed > size {
        return Err(truncated(needed));
    }
    Ok(())
}

/// Reads and checks a library's ABI note from its bytes, without loading it (see the module
/// docs for every check). `library` names it in errors.
///
/// # Errors
/// The first check that fails, as its own [`LibraryError`] variant.
pub fn inspect(library: &str, bytes: &[u8]) -> Result<LibraryInfo, LibraryError> {
    check_extents(library, bytes)?;
    let not_shared = |reason: String| LibraryError::NotSharedLibrary {
        library: library.to_string(),
        reason,
    };
    let file = object::File::parse(bytes).map_err(|e| not_shared(e.to_string()))?;
    let arch = file.architecture();
    if arch != host_architecture() {
        return Err(LibraryError::WrongArchitecture {
            library: library.to_string(),
            library_arch: arch_name(arch),
            host_arch: arch_name(host_architecture()),
        });
    }
    if file.kind() != object::ObjectKind::Dynamic {
        return Err(not_shared(format!(
            "it is an ELF {:?} file, not a shared object (build the crate with crate-type = [\"cdylib\"])",
            file.kind()
        )));
    }
    let mut note_bytes = None;
    let mut has_entry = false;
    for symbol in file.dynamic_symbols() {
        match symbol.name() {
            Ok(name) if name == NOTE_SYMBOL && symbol.is_definition() => {
                let bad = |reason: String| LibraryError::BadNote {
                    library: library.to_string(),
                    reason,
                };
                let section = symbol
                    .section_index()
                    .and_then(|index| file.section_by_index(index).ok())
                    .ok_or_else(|| bad("the symbol has no section".into()))?;
                let data = section
                    .data_range(symbol.address(), NOTE_LEN as u64)
                    .map_err(|e| bad(e.to_string()))?
                    .ok_or_else(|| bad("the symbol lies outside its section's data".into()))?;
                note_bytes = Some(data);
            }
            Ok(name) if name == ENTRY_SYMBOL && symbol.is_definition() => has_entry = true,
            _ => {}
        }
    }
    let Some(note_bytes) = note_bytes else {
        return Err(LibraryError::NotAJobLibrary {
            library: library.to_string(),
            symbol: NOTE_SYMBOL.to_string(),
        });
    };
    let note = check_note(library, note_bytes)?;
    if !has_entry {
        return Err(LibraryError::MissingEntryPoint {
            library: library.to_string(),
            symbol: ENTRY_SYMBOL.to_string(),
        });
    }
    Ok(LibraryInfo { note })
}

/// Parses a note and compares it with this node's: ABI version first, then the fingerprint.
fn check_note(library: &str, bytes: &[u8]) -> Result<AbiNote, LibraryError> {
    let note = parse_note(bytes).map_err(|e| LibraryError::BadNote {
        library: library.to_string(),
        reason: e.to_string(),
    })?;
    if note.abi_version != ABI_VERSION {
        return Err(LibraryError::AbiVersion {
            library: library.to_string(),
            library_version: note.abi_version,
            host_version: ABI_VERSION,
        });
    }
    if note.fingerprint != BUILD_FINGERPRINT {
        return Err(LibraryError::Fingerprint {
            library: library.to_string(),
            library_build: note.fingerprint,
            host_build: BUILD_FINGERPRINT.to_string(),
        });
    }
    Ok(note)
}

/// A loaded job library. Lives until the process exits.
pub struct JobLibrary {
    name: String,
    key: BlobKey,
    plugin: Plugin,
    jobs: Vec<(String, String)>,
    /// Kept so that the library is never unloaded.
    _library: libloading::Library,
}

impl std::fmt::Debug for JobLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobLibrary")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

/// Every library this process loaded, by content.
fn loaded() -> &'static Mutex<HashMap<BlobKey, Arc<JobLibrary>>> {
    static LOADED: OnceLock<Mutex<HashMap<BlobKey, Arc<JobLibrary>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

impl JobLibrary {
    /// Loads the library at `path` (once per content per process; see the module docs).
    /// Blocking.
    ///
    /// # Errors
    /// Whatever [`inspect`] refuses, a loader error, or the library's entry point failing.
    pub fn load(path: &Path) -> Result<Arc<JobLibrary>, LibraryError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Self::load_as(path, &name)
    }

    /// [`JobLibrary::load`], naming the library `name` in messages (a TaskExecutor's cached
    /// copy is named by its key; the user knows it by its file name).
    ///
    /// # Errors
    /// As [`JobLibrary::load`].
    pub fn load_as(path: &Path, name: &str) -> Result<Arc<JobLibrary>, LibraryError> {
        let bytes = read(path)?;
        let key = BlobKey::of(&bytes);
        Self::load_inner(path, name, key, Some(bytes))
    }

    /// [`JobLibrary::load_as`] for a file whose content is known to hash to `key` (a
    /// TaskExecutor's BlobCache verified it): a library already loaded is found without reading
    /// or hashing the file again.
    ///
    /// # Errors
    /// As [`JobLibrary::load`].
    pub fn load_verified(
        path: &Path,
        name: &str,
        key: BlobKey,
    ) -> Result<Arc<JobLibrary>, LibraryError> {
        Self::load_inner(path, name, key, None)
    }

    fn load_inner(
        path: &Path,
        name: &str,
        key: BlobKey,
        bytes: Option<Vec<u8>>,
    ) -> Result<Arc<JobLibrary>, LibraryError> {
        let name = name.to_string();
        // One load at a time: the tasks of a job arriving together load it once.
        let mut table = loaded().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(library) = table.get(&key) {
            return Ok(Arc::clone(library));
        }
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => read(path)?,
        };
        let info = inspect(&name, &bytes)?;
        drop(bytes);
        let load_error = |reason: String| LibraryError::Load {
            library: name.clone(),
            reason,
        };
        // SAFETY: the file is an rflink job library for this node's ABI and build (checked
        // above, before any of its code runs); loading it runs its ELF initializers.
        let library = unsafe { open(path) }.map_err(|e| load_error(e.to_string()))?;
        // SAFETY: the note is a static `[u8; NOTE_LEN]` (the symbol's type per the ABI).
        let in_memory: [u8; NOTE_LEN] = unsafe {
            let symbol = library
                .get::<*const [u8; NOTE_LEN]>(format!("{NOTE_SYMBOL}\0").as_bytes())
                .map_err(|e| load_error(e.to_string()))?;
            **symbol
        };
        let note = check_note(&name, &in_memory)?;
        if note != info.note {
            return Err(load_error(
                "the loaded note differs from the file's (was the file replaced?)".into(),
            ));
        }
        // SAFETY: the entry point has the ABI's signature (same ABI version and build).
        let entry: EntryFn = unsafe {
            *library
                .get::<EntryFn>(format!("{ENTRY_SYMBOL}\0").as_bytes())
                .map_err(|e| load_error(e.to_string()))?
        };
        // SAFETY: `entry` follows the ABI; the library stays loaded for good (kept below, or
        // leaked when its entry fails, since a library is never unloaded).
        let started = unsafe { Plugin::from_entry(entry) }
            .and_then(|plugin| plugin.jobs().map(|jobs| (plugin, jobs)));
        let (plugin, jobs) = match started {
            Ok(started) => started,
            Err(e) => {
                std::mem::forget(library);
                return Err(LibraryError::Entry {
                    library: name,
                    reason: e.to_string(),
                });
            }
        };
        tracing::info!(library = %name, %key, ?jobs, "job library loaded");
        let library = Arc::new(JobLibrary {
            name,
            key,
            plugin,
            jobs,
            _library: library,
        });
        table.insert(key, Arc::clone(&library));
        Ok(library)
    }

    /// The file name it was loaded from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its content's SHA-256.
    pub fn key(&self) -> BlobKey {
        self.key
    }

    /// The jobs it exports: `(name, description)`, sorted by name.
    pub fn jobs(&self) -> &[(String, String)] {
        &self.jobs
    }

    /// Its function table.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LibraryError> {
    std::fs::read(path).map_err(|e| LibraryError::Read {
        library: path.display().to_string(),
        reason: e.to_string(),
    })
}

#[cfg(unix)]
unsafe fn open(path: &Path) -> Result<libloading::Library, libloading::Error> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: forwarded to the caller.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map(Into::into)
}

#[cfg(not(unix))]
unsafe fn open(path: &Path) -> Result<libloading::Library, libloading::Error> {
    // SAFETY: forwarded to the caller.
    unsafe { libloading::Library::new(path) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary itself: an ELF executable of this architecture, not a job library.
    fn own_binary() -> Vec<u8> {
        std::fs::read(std::env::current_exe().expect("exe")).expect("readable")
    }

    #[test]
    fn garbage_and_short_files_are_not_shared_libraries() {
        for bytes in [&b""[..], b"hello world", b"MZ\x90\x00 a windows file"] {
            match inspect("x.so", bytes) {
                Err(LibraryError::NotSharedLibrary { library, .. }) => assert_eq!(library, "x.so"),
                other => panic!("{other:?}"),
            }
        }
        match inspect("x.so", b"\x7fELF\x02\x01\x01") {
            Err(LibraryError::Truncated {
                size: 7,
                needed: 64,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_executable_without_the_note_is_refused_and_truncation_is_named() {
        let bytes = own_binary();
        let err = inspect("exe", &bytes).expect_err("not a job library");
        assert!(
            matches!(
                err,
                LibraryError::NotAJobLibrary { .. } | LibraryError::NotSharedLibrary { .. }
            ),
            "{err}"
        );
        let cut = &bytes[..bytes.len() / 2];
        match inspect("exe", cut) {
            Err(LibraryError::Truncated { size, needed, .. }) => assert!(needed > size),
            other => panic!("{other:?}"),
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn another_architecture_is_named() {
        let mut bytes = own_binary();
        // e_machine: 183 (AArch64) on x86_64 hosts, 62 (x86-64) elsewhere.
        let other: u16 = if std::env::consts::ARCH == "x86_64" {
            183
        } else {
            62
        };
        bytes[18..20].copy_from_slice(&other.to_le_bytes());
        match inspect("lib.so", &bytes) {
            Err(LibraryError::WrongArchitecture {
                library_arch,
                host_arch,
                ..
            }) => {
                assert_ne!(library_arch, host_arch);
                assert_eq!(host_arch, arch_name(host_architecture()));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Arbitrary bytes, and this binary's ELF with bytes of its headers overwritten (offsets,
    /// counts, sizes pointing anywhere), are refused with an error, never a panic.
    #[test]
    fn mangled_files_are_refused_without_panicking() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for len in [0usize, 1, 4, 16, 52, 63, 64, 65, 200, 4096] {
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert!(inspect("random", &bytes).is_err());
            let mut elf = bytes.clone();
            if elf.len() >= 6 {
                elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
                assert!(inspect("random-elf", &elf).is_err());
            }
        }
        #[cfg(target_os = "linux")]
        {
            let mut bytes = own_binary();
            for _ in 0..200 {
                // Mangle the ELF header and the first program headers, then restore them.
                let saved: Vec<(usize, u8)> = (0..1 + next() % 4)
                    .map(|_| {
                        let at = (next() % 512) as usize;
                        let old = bytes[at];
                        bytes[at] = next() as u8;
                        (at, old)
                    })
                    .collect();
                let _ = inspect("mangled", &bytes);
                for (at, old) in saved.into_iter().rev() {
                    bytes[at] = old;
                }
            }
        }
    }

    #[test]
    fn notes_are_checked_version_first_then_fingerprint() {
        let ok = rflink::abi::NOTE;
        assert!(check_note("l", &ok).is_ok());
        let version = rflink::abi::note(ABI_VERSION + 1, "whatever");
        assert!(matches!(
            check_note("l", &version),
            Err(LibraryError::AbiVersion { library_version, .. }) if library_version == ABI_VERSION + 1
        ));
        let build = rflink::abi::note(ABI_VERSION, "rflink 0.0.1 / rustc 1.0.0 / elsewhere");
        let err = check_note("l", &build).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("rflink 0.0.1 / rustc 1.0.0"), "{text}");
        assert!(text.contains(BUILD_FINGERPRINT), "{text}");
        assert!(matches!(
            check_note("l", &[0u8; NOTE_LEN]),
            Err(LibraryError::BadNote { .. })
        ));
    }
}
