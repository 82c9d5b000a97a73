pub mod cri_api {
    #![allow(clippy::all)]
    tonic::include_proto!("runtime.v1");
}
