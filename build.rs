//! Compiles the CRI API definition in `proto/` (client and server) with tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/api.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    if std::env::var_os("PROTOC").is_none() && which_protoc().is_none() {
        return Err(
            "protoc not found: install it (`apt-get install protobuf-compiler`, or run \
             `scripts/install-deps.sh`) or set PROTOC to its path"
                .into(),
        );
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}

fn which_protoc() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("protoc"))
            .find(|p| p.is_file())
    })
}
