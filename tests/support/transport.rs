//! Transport through the public API: an approved card issued, a card loaded, a key exported
//! and imported, as the transport suites and the boundary tests drive them.

use hkms::proto::{self, transport_service_client::TransportServiceClient};

use super::{SO_PIN, TestNode, USER_PIN};

/// Opens an issue-card ceremony for `region` and has two officers of the node approve it.
pub async fn approve_card(node: &TestNode, region: &str) -> String {
    let done = node
        .ceremony(
            hkms::proto::Operation::Manage,
            &[("action", "issue-card"), ("region", region)],
        )
        .await;
    assert_eq!(
        done.state(),
        hkms::proto::CeremonyState::Done,
        "{}",
        done.result
    );
    done.id
}

/// Issues a card for `region` onto the card token `card`, under an approved ceremony.
pub async fn issue(node: &TestNode, region: &str, card: &str) -> proto::TransportKeyInfo {
    let ceremony = approve_card(node, region).await;
    TransportServiceClient::new(node.channel().await)
        .issue_card(proto::IssueCardRequest {
            region: region.into(),
            card_label: card.into(),
            card_pin: USER_PIN.into(),
            ceremony_id: ceremony,
            ..Default::default()
        })
        .await
        .expect("issue card")
        .into_inner()
}

/// Loads `issued` from the card token `card` as `who`, with `kcv` and `so_pin` as given.
pub async fn try_load(
    node: &TestNode,
    who: &str,
    card: &str,
    issued: &proto::TransportKeyInfo,
    kcv: &str,
    so_pin: &str,
) -> Result<proto::TransportKeyInfo, tonic::Status> {
    TransportServiceClient::new(node.channel_as(who).await)
        .load_card(proto::LoadCardRequest {
            card_label: card.into(),
            card_pin: USER_PIN.into(),
            card_id: issued.card_id.clone(),
            card_so_pin: so_pin.into(),
            expected_kcv: kcv.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Loads `issued` from the card token `card` as `who`; it must work.
pub async fn load(
    node: &TestNode,
    who: &str,
    card: &str,
    issued: &proto::TransportKeyInfo,
) -> proto::TransportKeyInfo {
    try_load(node, who, card, issued, &issued.kcv, SO_PIN)
        .await
        .expect("load card")
}

/// Exports `key_id` for `region` under the card `card` (empty: the newest issued).
pub async fn export_for(node: &TestNode, key_id: &str, region: &str, card: &str) -> Vec<u8> {
    TransportServiceClient::new(node.channel().await)
        .export_key(proto::ExportKeyRequest {
            key_id: key_id.into(),
            recipient_region: region.into(),
            card_id: card.into(),
            ..Default::default()
        })
        .await
        .expect("export")
        .into_inner()
        .package
}

/// Exports `key_id` for `region` under the newest card issued for it.
pub async fn export(node: &TestNode, key_id: &str, region: &str) -> Vec<u8> {
    export_for(node, key_id, region, "").await
}

/// Imports `package` as `who`.
pub async fn import(
    node: &TestNode,
    who: &str,
    package: Vec<u8>,
) -> Result<proto::Key, tonic::Status> {
    TransportServiceClient::new(node.channel_as(who).await)
        .import_key(proto::ImportKeyRequest {
            package,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().key.expect("key"))
}
