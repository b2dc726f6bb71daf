//! A library that looks like a job library built with another rflink and compiler: its note
//! carries a different build fingerprint. rflink must refuse it from the note alone: its entry
//! point aborts the process if it is ever called, so a test that survives proves no call was
//! made.

/// The note of a library built elsewhere.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub static RFLINK_ABI_NOTE: [u8; rflink::abi::NOTE_LEN] = rflink::abi::note(
    rflink::abi::ABI_VERSION,
    "rflink 0.0.1 / rustc 1.70.0 (90c541806 2023-05-31) / x86_64-unknown-linux-gnu",
);

/// Must never be called: rflink refuses the library before any call.
///
/// # Safety
/// None needed: it never returns.
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rflink_plugin_entry(
    _host: *const rflink::abi::HostApi,
    _api: *mut *const rflink::abi::PluginApi,
    _err: *mut rflink::abi::RfBuf,
) -> rflink::abi::Status {
    std::process::abort()
}
