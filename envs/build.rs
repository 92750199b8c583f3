// Feature `python` embeds the interpreter: this crate's test and example binaries link
// libpython, so they get an rpath to its directory and start without LD_LIBRARY_PATH (a
// pyenv or conda Python keeps libpython outside the loader's default paths).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "python")]
    pyo3_build_config::add_libpython_rpath_link_args();
}
