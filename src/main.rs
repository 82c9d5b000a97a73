fn main() {
    let _ = rollcache::node::cri_api::ImageSpec::default();
}
