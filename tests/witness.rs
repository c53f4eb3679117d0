//! Witnesses: a province checks and cosigns its city's checkpoints; a cut-back log is refused
//! by the witness (recorded, counted, alerted) and shows as BROKEN to an auditor who pins the
//! witness's key; a witness that was down is caught up once it returns. A rewritten log:
//! tests/witness_rewrite.rs.

mod support;

use hkms::proto;
use support::witness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_back_is_refused_by_its_witness() {
    let province = province();
    let mut city = city_witnessed_by(&province, "440100");
    busy(&city, 14).await;
    wait_until("the province cosigned", &[&province, &city], || {
        cosigned(&city)
    })
    .await;
    let before = refusals(&province);

    city.stop();
    let at = cut_back(&city, 6);
    assert!(at >= 1);
    city.start_again();
    busy(&city, 3).await;
    wait_until(
        "the province refused the cut-back log",
        &[&province, &city],
        || async { refusals(&province) > before },
    )
    .await;
    assert!(!cosigned(&city).await);

    let (ok, said) = export_and_verify(&city, AUDITOR_CITY, &province);
    assert!(!ok, "a cut-back log must not verify: {said}");
    assert!(said.contains("BROKEN"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_that_was_down_is_caught_up_when_it_returns() {
    let mut province = province();
    let city = {
        // The city's metrics show the backlog.
        let c = city_witnessed_by(&province, "440100");
        let text = std::fs::read_to_string(&c.config).expect("config")
            + "\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
        std::fs::write(&c.config, text).expect("config");
        let mut c = c;
        c.restart();
        c
    };
    busy(&city, 6).await;
    wait_until("the province cosigned", &[&province, &city], || {
        cosigned(&city)
    })
    .await;

    province.stop();
    busy(&city, 12).await;
    wait_until(
        "the city counts what is not witnessed",
        &[&city],
        || async { backlog(&city).is_some_and(|b| b >= 12) },
    )
    .await;
    assert!(!cosigned(&city).await, "health shows the backlog");
    // The node kept serving meanwhile.
    busy(&city, 1).await;

    province.start_again();
    wait_until(
        "the city caught the province up",
        &[&province, &city],
        || cosigned(&city),
    )
    .await;
    wait_until(
        "the backlog is only what is not sealed yet",
        &[&province, &city],
        || async { backlog(&city).is_some_and(|b| b < 12) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_province_witnesses_only_its_own_cities() {
    let province = province();
    let outsider = "hkms://system/municipal/450100/nanning-node";
    let mut client = proto::witness_service_client::WitnessServiceClient::new(
        province.channel_as(outsider).await,
    );
    let err = client
        .witness_checkpoint(proto::WitnessCheckpointRequest::default())
        .await
        .expect_err("a city of another province is not witnessed here");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let window = "hkms://window/municipal/440100/counter-1";
    let mut client =
        proto::witness_service_client::WitnessServiceClient::new(province.channel_as(window).await);
    let err = client
        .witness_checkpoint(proto::WitnessCheckpointRequest::default())
        .await
        .expect_err("only a node's system identity sends checkpoints");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ministry_is_witnessed_by_two_provinces() {
    let guangdong = province_named("guangdong", "440000");
    let guangxi = province_named("guangxi", "450000");
    let ministry = witnessed_node(
        "ministry",
        "national",
        "000000",
        &[("guangdong", &guangdong), ("guangxi", &guangxi)],
    );
    busy(&ministry, 7).await;
    for witness in ["guangdong", "guangxi"] {
        wait_until(
            &format!("{witness} cosigned the ministry's checkpoint"),
            &[&ministry, &guangdong, &guangxi],
            || cosigned_by(&ministry, witness),
        )
        .await;
    }
}
