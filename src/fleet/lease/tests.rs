use super::*;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn held(holder: Option<&str>, renewed: Option<i64>, duration: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: holder.map(str::to_owned),
        renew_time: renewed.map(|s| MicroTime(at(s))),
        lease_duration_seconds: Some(duration),
        ..LeaseSpec::default()
    }
}

#[test]
fn a_lease_is_taken_only_when_missing_free_or_expired() {
    assert_eq!(step(None, "a", at(0)), Step::Create);
    assert_eq!(
        step(Some(&held(Some("a"), Some(0), 15)), "a", at(100)),
        Step::Renew
    );
    assert_eq!(
        step(Some(&held(None, Some(0), 15)), "a", at(1)),
        Step::TakeOver
    );
    assert_eq!(
        step(Some(&held(Some(""), Some(0), 15)), "a", at(1)),
        Step::TakeOver
    );
    let b = held(Some("b"), Some(0), 15);
    assert_eq!(
        step(Some(&b), "a", at(14)),
        Step::Wait { holder: "b".into() }
    );
    assert_eq!(
        step(Some(&b), "a", at(15)),
        Step::TakeOver,
        "expired at renewTime + duration"
    );
    // Never renewed: the acquire time counts; neither: nothing says it is held.
    let acquired = LeaseSpec {
        acquire_time: Some(MicroTime(at(0))),
        ..held(Some("b"), None, 15)
    };
    assert_eq!(
        step(Some(&acquired), "a", at(5)),
        Step::Wait { holder: "b".into() }
    );
    assert_eq!(
        step(Some(&held(Some("b"), None, 15)), "a", at(0)),
        Step::TakeOver
    );
}
