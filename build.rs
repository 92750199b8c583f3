// Feature `python` embeds the interpreter (through m3ixup-envs): the binaries and tests link
// libpython, so they get an rpath to its directory and start without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "python")]
    pyo3_build_config::add_libpython_rpath_link_args();
}
