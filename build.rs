//! Compiles proto/onnx.proto3 into prost types with protox: no system protoc needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto3");
    let descriptors = protox::compile(["onnx.proto3"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
