//! Link flags for the guest image. They apply only to the `umbra-firmware`
//! binary, which only builds with the `image` feature (the VMM's build script
//! asks for it); the host-side library is untouched.
fn main() {
    println!("cargo:rerun-if-changed=layout.ld");
    if std::env::var_os("CARGO_FEATURE_IMAGE").is_some() {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        for arg in ["-nostartfiles", "-static", "-no-pie", "-Wl,--build-id=none"] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
        println!("cargo:rustc-link-arg-bins=-T{dir}/layout.ld");
    }
}
