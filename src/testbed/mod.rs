//! A private test bed: containerd, an OCI registry and a Kubernetes API server speaking the real
//! wire protocol, each started on unix sockets / 127.0.0.1 in a temp dir. Used by the tests, the
//! benchmarks and `rollcache demo`; never touches the system containerd.
pub mod apiserver;
