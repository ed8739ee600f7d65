//! The embedded object loads and both programs pass the verifier on this kernel.
#[test]
fn embedded_object_loads_and_passes_the_verifier() {
    let dp = vrf_user::dataplane::DataPlane::load().expect("load");
    assert_eq!(dp.attached().count(), 0);
}
