//! The binary run as a person runs it against a test API server: a kubeconfig of its own, no
//! cluster found by accident; its exit code, output and JSON.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rollcache_testbed::apiserver::ApiServer;
use serde_json::Value;

/// A kubeconfig for `server`, its context in `namespace` if given.
pub fn kubeconfig_in(dir: &Path, server: &str, namespace: Option<&str>) -> PathBuf {
    let ns = namespace.map_or_else(String::new, |n| format!("    namespace: {n}\n"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n\
         users:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n{ns}\
         current-context: c\n"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    kubeconfig_in(dir, server, None)
}

/// Runs the binary with `args` against `api`, off the async runtime the server answers on.
pub async fn rollcache(api: &ApiServer, args: &[&str]) -> Output {
    rollcache_in(api, None, args).await
}

/// [`rollcache`] with the kubeconfig's context in `namespace`.
pub async fn rollcache_in(api: &ApiServer, namespace: Option<&str>, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let config = kubeconfig_in(home.path(), &api.url(), namespace);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcache"));
    cmd.args(args)
        .arg("--kubeconfig")
        .arg(&config)
        .env_remove("KUBECONFIG")
        .env_remove("ROLLCACHE_CONTEXT")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUST_LOG")
        .env("HOME", home.path())
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)))
}
