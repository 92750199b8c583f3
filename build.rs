// Feature `python` embeds the interpreter (through m3ixup-envs): the binaries and tests link
// libpython, so they get an rpath to its directory and start without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "python")]
    pyo3_build_config::add_libpython_rpath_link_args();
    // Feature `tch`: libtorch's directory, as torch-sys found it (exported to direct dependents
    // through `links = "tch"`), goes in the rpath of the binaries and tests, so they start
    // without LD_LIBRARY_PATH.
    if std::env::var_os("CARGO_FEATURE_TCH").is_some() {
        println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
        match std::env::var("DEP_TCH_LIBTORCH_LIB") {
            Ok(dir) => println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}"),
            Err(_) => println!("cargo:warning=feature tch: torch-sys did not report libtorch's directory; set LD_LIBRARY_PATH at run time"),
        }
    }
}
