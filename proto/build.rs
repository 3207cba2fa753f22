//! Compiles proto/tern/v1/*.proto with protox (pure Rust), so no system `protoc` is needed,
//! and writes the list of every RPC path (`/tern.v1.Service/Method`) to `methods.rs`.

use std::fmt::Write as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/tern/v1/tern.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let mut methods = String::from(
        "/// Every RPC of the API as its HTTP/2 path, `/tern.v1.Service/Method`.\npub const METHODS: &[&str] = &[\n",
    );
    for file in &fds.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                writeln!(methods, "    \"/{package}.{}/{}\",", service.name(), method.name())?;
            }
        }
    }
    methods.push_str("];\n");
    std::fs::write(std::path::Path::new(&std::env::var("OUT_DIR")?).join("methods.rs"), methods)?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
